#!/usr/bin/env bash
# The checks every change passes before its tests run: formatting (rustfmt.toml), clippy with
# warnings as errors on every target, and no declared-but-unused dependency. Fails on the
# first finding, printing it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CALVE_CACHE="${CALVE_CACHE:-$HOME/.cache/calve}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CALVE_CACHE/target}"
echo "lint: cargo fmt --check" >&2
cargo fmt --all --check
echo "lint: cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "lint: cargo machete (unused dependencies)" >&2
MACHETE="$(scripts/install-machete.sh)"
"$MACHETE" --with-metadata
