#!/usr/bin/env bash
# Installs the tansu Kafka-protocol broker used by the integration tests, cached outside the
# clone so a warm machine reuses the binary. Prints the binary's path on stdout.
set -euo pipefail
VERSION="${TANSU_VERSION:-0.6.0}"
ROOT="${CALVE_CACHE:-$HOME/.cache/calve}/tansu-$VERSION"
BIN="$ROOT/bin/tansu"
if [ ! -x "$BIN" ]; then
  echo "installing tansu $VERSION into $ROOT (cold build: 12-30 min on 2 cores)" >&2
  # Without a storage feature tansu maps every storage URL to a null engine that discards data.
  CARGO_TARGET_DIR="$ROOT/target" cargo install "tansu@$VERSION" --locked \
    --features dynostore,libsql --root "$ROOT" >&2
  rm -rf "$ROOT/target"
fi
echo "$BIN"
