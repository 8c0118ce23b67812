#!/usr/bin/env bash
# Runs every test: unit tests, commit-layer tests (SQLite catalog, PyIceberg + DuckDB readers)
# and end-to-end tests on a real Kafka-protocol broker (tansu), including the kill-9 chaos test,
# also on S3 (moto) with a foreign REST catalog (rustberg). Installs what it needs (tansu and
# rustberg binaries, Python venv) into ~/.cache/calve on first use, and
# PostgreSQL from Debian's packages for the Postgres catalog tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export CALVE_CACHE="${CALVE_CACHE:-$HOME/.cache/calve}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CALVE_CACHE/target}"
export CALVE_TANSU="$(scripts/install-tansu.sh)"
export CALVE_RUSTBERG="$(scripts/install-rustberg.sh)"
export CALVE_PG_BIN="$(scripts/install-postgres.sh)"
export CALVE_PROMETHEUS_BIN="$(scripts/install-prometheus.sh)"
scripts/setup-python.sh >&2
export CALVE_VENV="$CALVE_CACHE/venv"
cargo test --workspace --locked --no-fail-fast "$@"
