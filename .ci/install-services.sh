#!/usr/bin/env bash
# Install the services the tests start themselves (on loopback only), where missing.
# Today: Debian's prometheus package (apt-get, as root or through sudo), for the energy tests
# against a real Prometheus server; see .ci/install-prometheus.sh. Prints nothing when all goes
# well, and never enables or starts a system service.
# Skip it with TASKTRACE_SKIP_SERVICES=1 (the tests that need the server are then skipped, each
# saying why), or by having `prometheus` on PATH already.
# In CI (CI=true) a failed install fails the run; elsewhere those tests are skipped.
set -euo pipefail
if ! bash .ci/install-prometheus.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "install-services: Prometheus is required in CI" >&2
    exit 1
  fi
  echo "install-services: Prometheus could not be installed; its tests will be skipped" >&2
fi
