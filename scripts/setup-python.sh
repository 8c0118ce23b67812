#!/usr/bin/env bash
# Creates (or refreshes when requirements change) the venv with the foreign readers used by the
# tests: PyIceberg, DuckDB with its iceberg extension, and confluent-kafka.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${CALVE_VENV:-${CALVE_CACHE:-$HOME/.cache/calve}/venv}"
REQS=crates/testkit/python/requirements.txt
if ! cmp -s "$REQS" "$VENV/.calve-requirements" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$REQS"
  cp "$REQS" "$VENV/.calve-requirements"
fi
echo "$VENV"
