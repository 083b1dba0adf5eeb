#!/bin/sh
# Install Debian's `prometheus` package where the binary is missing, for the energy tests against
# a real Prometheus server (tests/meters/test_prometheus_meter.py; the tests start their own
# server on a loopback port and stop it). Idempotent; uses apt-get only (as root, or through
# sudo). Skipped when TASKTRACE_SKIP_SERVICES=1 or when `prometheus` is on PATH already.
#
# Quiet: apt-get's and dpkg's output goes to a log file, printed only if the install fails.
#
# It never enables or starts a system service. The package's postinst would (1) register its
# SysV init script with `update-rc.d defaults` and start it with invoke-rc.d, (2) enable
# prometheus.service with `deb-systemd-helper enable` (which, on a first install, runs
# `systemctl preset`) and (3) start it with deb-systemd-invoke. Here:
#   - dpkg leaves out /etc/init.d/prometheus (--path-exclude), so the postinst skips (1);
#   - while the install runs, a systemd preset file says "disable prometheus.service", so (2)
#     records the unit as disabled (Debian keeps that state on later upgrades) and creates no
#     link; where systemctl is missing, deb-systemd-helper would create the links itself, so
#     the unit file is left out as well;
#   - deb-systemd-invoke does not start a disabled unit (3); and while the install runs,
#     policy-rc.d (if the machine has none) answers 101, "do not start", to invoke-rc.d and
#     deb-systemd-invoke.
set -eu
if [ "${TASKTRACE_SKIP_SERVICES:-}" = 1 ] || command -v prometheus >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-prometheus: no apt-get here; install Prometheus by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

LOG=$(mktemp "${TMPDIR:-/tmp}/tasktrace-install-prometheus.XXXXXX")
PRESET=/etc/systemd/system-preset/00-tasktrace-no-prometheus.preset
POLICY=""
PRESET_DIR=""
cleanup() {
    $SUDO rm -f "$PRESET"
    if [ -n "$PRESET_DIR" ]; then
        $SUDO rmdir "$PRESET_DIR"
    fi
    if [ -n "$POLICY" ]; then
        $SUDO rm -f "$POLICY"
    fi
}
trap cleanup EXIT
fail() {
    echo "install-prometheus: $1; its output (also in $LOG):" >&2
    cat "$LOG" >&2
    trap - EXIT
    cleanup
    exit 1
}

EXCLUDE="/etc/init.d/prometheus"
if command -v systemctl >/dev/null 2>&1; then
    if [ ! -d /etc/systemd/system-preset ]; then
        PRESET_DIR=/etc/systemd/system-preset
        $SUDO mkdir -p "$PRESET_DIR"
    fi
    echo "disable prometheus.service" | $SUDO tee "$PRESET" >/dev/null
else
    EXCLUDE="$EXCLUDE /lib/systemd/system/prometheus.service /usr/lib/systemd/system/prometheus.service"
fi
if [ ! -e /usr/sbin/policy-rc.d ]; then
    POLICY=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod +x "$POLICY"
fi
set --
for path in $EXCLUDE; do
    set -- "$@" -o "DPkg::Options::=--path-exclude=$path"
done

$SUDO apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update failed"
# --no-install-recommends keeps node-exporter and friends out.
$SUDO apt-get install -y -qq --no-install-recommends "$@" prometheus >>"$LOG" 2>&1 ||
    fail "apt-get install prometheus failed"
command -v prometheus >/dev/null 2>&1 || fail "prometheus is still not on PATH"
rm -f "$LOG"
