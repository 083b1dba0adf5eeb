#!/usr/bin/env bash
# Install the system services the tests start themselves (on loopback), where missing.
set -euo pipefail
if [ -x .ci/install-prometheus.sh ] || [ -f .ci/install-prometheus.sh ]; then
  bash .ci/install-prometheus.sh
fi
