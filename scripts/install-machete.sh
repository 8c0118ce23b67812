#!/usr/bin/env bash
# Installs cargo-machete (finds dependencies a crate declares and never uses), cached outside
# the clone by version like the broker. Prints the binary's path on stdout.
set -euo pipefail
VERSION="${MACHETE_VERSION:-0.9.2}"
ROOT="${CALVE_CACHE:-$HOME/.cache/calve}/cargo-machete-$VERSION"
BIN="$ROOT/bin/cargo-machete"
if [ ! -x "$BIN" ]; then
  echo "installing cargo-machete $VERSION into $ROOT (about a minute)" >&2
  CARGO_TARGET_DIR="$ROOT/target" cargo install "cargo-machete@$VERSION" --locked --root "$ROOT" >&2
  rm -rf "$ROOT/target"
fi
echo "$BIN"
