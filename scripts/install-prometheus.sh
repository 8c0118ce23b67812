#!/usr/bin/env bash
# Makes a Prometheus server (and promtool) available for the metrics tests: Debian's package.
# Prints the directory holding `prometheus` and `promtool`. The package's service is not
# started (there is no init system here); tests start their own server on a leased port.
set -euo pipefail
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "installing prometheus from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Another install (PostgreSQL's, say) may hold the dpkg lock: wait for it instead of failing.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends prometheus >&2
fi
dirname "$(command -v prometheus)"
