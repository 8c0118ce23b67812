#!/usr/bin/env bash
# The checks every change passes before its tests run: formatting (rustfmt.toml), clippy with
# warnings as errors on every target, no declared-but-unused dependency, and a systemd unit
# every directive of which systemd knows. Fails on the
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
# The example systemd unit (deploy/calve.service): every directive known to this systemd.
# verify exits 0 on an unknown key, so any message it prints fails the check.
if command -v systemd-analyze >/dev/null; then
  echo "lint: systemd-analyze verify deploy/calve.service" >&2
  unit_dir="$(mktemp -d)"
  trap 'rm -rf "$unit_dir"' EXIT
  # The unit names the installed binary, which verify insists exists.
  sed "s#/usr/local/bin/calve#$(command -v true)#" deploy/calve.service > "$unit_dir/calve.service"
  # Only what it says about this unit: a machine's own units may draw warnings of their own.
  findings="$(systemd-analyze verify "$unit_dir/calve.service" 2>&1 | grep -F "calve.service" || true)"
  if [ -n "$findings" ]; then
    echo "$findings" >&2
    exit 1
  fi
fi
