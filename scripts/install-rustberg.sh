#!/usr/bin/env bash
# Installs rustberg, an Iceberg REST catalog server nobody here wrote, used by the tests that
# prove calve against a foreign REST catalog. Cached outside the clone, keyed by version, like
# tansu. Prints the binary's path on stdout.
set -euo pipefail
VERSION="${RUSTBERG_VERSION:-0.3.0}"
ROOT="${CALVE_CACHE:-$HOME/.cache/calve}/rustberg-$VERSION"
BIN="$ROOT/bin/rustberg"
if [ ! -x "$BIN" ]; then
  echo "installing rustberg $VERSION into $ROOT (cold build: about 10-15 min on 2 cores)" >&2
  # Only the command line and S3 storage: the tests need no TLS, GCS or Azure on the server.
  CARGO_TARGET_DIR="$ROOT/target" cargo install "rustberg@$VERSION" --locked \
    --no-default-features --features cli,storage-s3 --root "$ROOT" >&2
  rm -rf "$ROOT/target"
fi
echo "$BIN"
