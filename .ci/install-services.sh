#!/usr/bin/env bash
# Install the services the tests start themselves (on loopback only), where missing.
# Today: Debian's prometheus package, for the energy tests against a real Prometheus server.
# In CI (CI=true) a failed install fails the run; elsewhere the tests that need the server are
# skipped, each saying why.
set -euo pipefail
if ! bash .ci/install-prometheus.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "install-services: Prometheus is required in CI" >&2
    exit 1
  fi
  echo "install-services: Prometheus could not be installed; its tests will be skipped" >&2
fi
