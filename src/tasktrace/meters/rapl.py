"""CPU (and DRAM) energy from RAPL, read through the Linux powercap interface.

Source of the numbers: ``<root>/intel-rapl:N[:M]/energy_uj`` (cumulative energy in microjoules,
updated by the hardware about every millisecond), wrapping at ``max_energy_range_uj`` of the same
zone. AMD processors expose the same ``intel-rapl`` interface. Zones are chosen so that no energy
is counted twice:

* ``cpu_power`` is the sum over the *package* zones (``name`` = ``package-N``). Their children
  (``core``, ``uncore``) are parts of the package and are never added again. ``psys`` (the whole
  platform, which includes the packages) is never added to packages; it is used alone, with scope
  ``platform``, only where no package zone exists.
* ``dram_energy_j`` is the sum over ``dram`` zones, reported separately: the package counter does
  not include DRAM.
* The ``intel-rapl-mmio`` zones duplicate the MSR package zones; they are used only where no
  ``intel-rapl`` package exists.

The numbers are package-wide: every process on the machine contributes, not just this one.

Each zone's counter is extended by a :class:`~tasktrace.meters.poller.ExtendedCounter` that the
shared poller reads often enough to see every wrap; the poller thread starts with the first task
that uses this meter. A step back that no wrap explains (more than :data:`MAX_POWER_W` would be
needed since the last reading) is a glitch or reset: the tasks spanning it get ``None``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.warn import WarnOnce
from tasktrace.meters.base import MeterReading
from tasktrace.meters.poller import ExtendedCounter, Poller, get_poller

__all__ = ["RAPL_UPDATE_PERIOD_S", "RaplMeter", "RaplZone", "find_zones", "select_zones"]

_log = logging.getLogger(__name__)
_warn = WarnOnce(_log)

DEFAULT_ROOT = Path("/sys/class/powercap")
"""Where Linux mounts the powercap class."""

RAPL_UPDATE_PERIOD_S = 0.001
"""Update period of the RAPL energy counters (about 1 ms on Intel and AMD), in seconds.

A task shorter than this is flagged with ``cpu_energy_short_task``.
"""

MAX_POWER_W = 1000.0
"""A generous bound of one zone's power, in watts (the largest CPU packages are rated ~500 W).

Used to derive how often a counter must be read (4 times per wrap at this power), and to judge
a step back: it is a wrap only if the counter could have climbed to ``max_energy_range_uj`` and
on to its new value at this power since the last reading; otherwise it is a glitch or reset.
"""

_ZONE_RE = re.compile(r"^(intel-rapl(?:-mmio)?)((?::\d+)+)$")

PERMISSION_FIX = (
    "energy_uj is readable by root only (Linux >= 5.10). Fix: "
    "`sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
    "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj` (until reboot), "
    'or a udev rule: SUBSYSTEM=="powercap", ACTION=="add", '
    'RUN+="/bin/chmod a+r /sys%p/energy_uj"; '
    "or measure through Prometheus ([prometheus] url and [machines.NAME] power_queries). "
    "See tasktrace's energy docs"
)
"""How to make RAPL readable, quoted in the permission warning."""


@dataclass(frozen=True)
class RaplZone:
    """One powercap zone.

    Attributes:
        zone_id: Directory name, e.g. ``intel-rapl:0:2``.
        path: Zone directory (holds ``name``, ``energy_uj``, ``max_energy_range_uj``).
        name: Contents of ``name``: ``package-0``, ``core``, ``uncore``, ``dram``, ``psys``.
        control: Control type, ``intel-rapl`` (MSR) or ``intel-rapl-mmio``.
        parent_id: ``zone_id`` of the parent zone, ``None`` for a top-level zone.
        max_energy_range_uj: Value at which ``energy_uj`` wraps, in microjoules.
    """

    zone_id: str
    path: Path
    name: str
    control: str
    parent_id: str | None
    max_energy_range_uj: int

    @property
    def is_package(self) -> bool:
        """Whether this is a top-level CPU package zone."""
        return self.parent_id is None and self.name.startswith("package")

    def ancestors(self) -> list[str]:
        """Zone ids of this zone's parent, grandparent, ... (from the id, not the filesystem)."""
        parts = self.zone_id.split(":")
        return [":".join(parts[:n]) for n in range(len(parts) - 1, 1, -1)]


def _read_uj(path: Path) -> int:
    """Read an integer counter file (µJ). Raises OSError or ValueError.

    Raw ``os.read`` rather than ``Path.read_text``: this runs at every task start and finish.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        return int(os.read(fd, 64))
    finally:
        os.close(fd)


def find_zones(root: Path = DEFAULT_ROOT) -> list[RaplZone]:
    """List the RAPL zones under ``root``, in the flat class layout or nested in their parents.

    Args:
        root: The powercap root (``/sys/class/powercap``, or a fixture tree in tests).

    Returns:
        Zones sorted by id; zones whose ``name`` or ``max_energy_range_uj`` cannot be read are left
        out (``energy_uj`` itself is not read here, so a root-only counter still lists).
    """
    candidates: dict[str, Path] = {}
    try:
        top = sorted(root.iterdir())
    except OSError:
        return []
    for entry in top:
        if _ZONE_RE.match(entry.name):
            candidates.setdefault(entry.name, entry)
            try:
                children = sorted(entry.iterdir())
            except OSError:
                continue
            for child in children:
                if _ZONE_RE.match(child.name) and child.is_dir():
                    candidates.setdefault(child.name, child)
    zones = []
    for zone_id, path in sorted(candidates.items()):
        match = _ZONE_RE.match(zone_id)
        assert match is not None  # filtered above
        parts = zone_id.split(":")
        try:
            name = (path / "name").read_text().strip()
            range_uj = _read_uj(path / "max_energy_range_uj")
        except (OSError, ValueError):
            continue
        parent = ":".join(parts[:-1]) if len(parts) > 2 else None
        zones.append(RaplZone(zone_id, path, name, match.group(1), parent, range_uj))
    return zones


def _without_nested(zones: list[RaplZone]) -> list[RaplZone]:
    ids = {z.zone_id for z in zones}
    return [z for z in zones if not ids.intersection(z.ancestors())]


def select_zones(zones: list[RaplZone]) -> tuple[list[RaplZone], str | None, list[RaplZone]]:
    """Choose the zones to sum for CPU energy and for DRAM energy.

    Args:
        zones: What :func:`find_zones` returned.

    Returns:
        ``(cpu_zones, cpu_scope, dram_zones)``: the package zones with scope ``"package"``, else
        the ``psys`` zone with scope ``"platform"``, else ``([], None, ...)``. No zone in either
        list is an ancestor of another in the same list, and ``psys`` never joins packages.
    """
    controls = ["intel-rapl", "intel-rapl-mmio"]
    chosen = next(
        (c for c in controls if any(z.control == c and z.is_package for z in zones)), "intel-rapl"
    )
    own = [z for z in zones if z.control == chosen]
    packages = [z for z in own if z.is_package]
    dram = _without_nested([z for z in own if z.name == "dram"])
    if packages:
        return _without_nested(packages), "package", dram
    psys = [z for z in zones if z.control == "intel-rapl" and z.name == "psys"]
    if psys:
        return psys[:1], "platform", dram
    return [], None, dram


_counters: dict[str, ExtendedCounter] = {}
_counters_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_counters_lock")


def _shared_counter(zone: RaplZone, clock: Callable[[], float]) -> ExtendedCounter:
    """Return the process's one extended counter for ``zone`` (created, and read, on first use).

    Every :class:`RaplMeter` on the same zone shares it, so wraps seen by the poller for one
    meter count for all. Raises OSError (``PermissionError``) or ValueError on the first read.
    """
    path = zone.path / "energy_uj"
    key = str(path)
    with _counters_lock:
        counter = _counters.get(key)
        if counter is None or counter.range != zone.max_energy_range_uj:
            counter = ExtendedCounter(
                lambda: _read_uj(path),
                zone.max_energy_range_uj,
                key,
                units_per_j=1e6,
                max_power_w=MAX_POWER_W,
                clock=clock,
            )
            _counters[key] = counter
        return counter


@dataclass(frozen=True)
class _Snapshot:
    cpu_uj: tuple[tuple[int, int], ...]  # (glitches, extended µJ) per counter
    dram_uj: tuple[tuple[int, int], ...]


def _delta_j(before: tuple[tuple[int, int], ...], counters: list[ExtendedCounter]) -> float | None:
    """Energy since ``before`` in joules; ``None`` if a counter glitched in between.

    Raises OSError or ValueError where a counter cannot be read.
    """
    now = [c.reading() for c in counters]
    if any(b[0] != n[0] for b, n in zip(before, now, strict=True)):
        return None
    return sum(n[1] - b[1] for b, n in zip(before, now, strict=True)) / 1e6


class RaplMeter:
    """CPU package (and DRAM) energy over a task, from RAPL counters.

    Reports ``cpu_power`` (joules, package-wide), ``cpu_energy_source`` (``"rapl"``),
    ``cpu_energy_scope`` (``"package"`` or ``"platform"``), ``cpu_energy_short_task`` and, where
    DRAM zones exist, ``dram_energy_j``. Thread-safe: one instance serves every task.

    A counter that cannot be read (permission denied: ``energy_uj`` is root-only on kernels since
    late 2020) makes the meter unavailable; :attr:`reason` says why and names the fix
    (:data:`PERMISSION_FIX`), and whoever installs the meter warns once. A read that fails later
    gives ``None`` and one warning; so does a counter that glitches during the task.
    """

    name = "rapl"

    def __init__(
        self,
        root: Path = DEFAULT_ROOT,
        *,
        poller: Poller | None = None,
        poll_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Create a meter reading the powercap tree at ``root``.

        Args:
            root: The powercap root; a fixture tree in tests.
            poller: The poller extending wrapping counters (default: the process's shared one).
            poll_interval_s: Longest interval between background reads of a counter, in seconds;
                a zone whose counter could wrap faster (at :data:`MAX_POWER_W`) is read more often.
            clock: Monotonic clock (seconds) that times counter readings, to judge whether a
                step back is a wrap (a parameter for tests; used by counters this meter creates).
        """
        self.root = Path(root)
        self._poller = poller
        self._poll_interval_s = poll_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        renew_after_fork(self, "_lock")
        self._checked = False
        self._cpu: list[ExtendedCounter] = []
        self._dram: list[ExtendedCounter] = []
        self.cpu_scope: str | None = None
        """``"package"`` or ``"platform"`` once :meth:`available` found zones."""
        self.reason: str | None = None
        """Why the meter is unavailable, once :meth:`available` returned ``False``."""
        self.reason_is_notable = False
        """Whether :attr:`reason` deserves a warning even where nobody asked for this meter by
        name (the counters exist but cannot be read), rather than a debug message (no RAPL)."""
        self._attached = False

    def available(self) -> bool:
        """Find the zones and read each counter once; return whether CPU or DRAM energy works.

        Sets :attr:`reason` where it does not; never raises.
        """
        if self._checked:  # the hot path (every task start): no lock once checked
            return bool(self._cpu or self._dram)
        with self._lock:
            if not self._checked:
                self._setup()
                self._checked = True
            return bool(self._cpu or self._dram)

    def _setup(self) -> None:
        cpu_zones, scope, dram_zones = select_zones(find_zones(self.root))
        if not cpu_zones and not dram_zones:
            self.reason = (
                f"no RAPL zones under {self.root} (no powercap RAPL here: a virtual machine, a "
                "container without /sys/class/powercap, or a CPU without RAPL); a Prometheus "
                "power query can measure such a machine"
            )
            return
        try:
            cpu = [_shared_counter(z, self._clock) for z in cpu_zones]
            dram = [_shared_counter(z, self._clock) for z in dram_zones]
        except PermissionError as e:
            self.reason = (
                f"cannot read RAPL counter {e.filename} (permission denied), so cpu_power is "
                f"None. {PERMISSION_FIX}"
            )
            self.reason_is_notable = True
            return
        except (OSError, ValueError) as e:
            self.reason = f"cannot read RAPL counters ({e})"
            self.reason_is_notable = True
            return
        self._cpu, self._dram, self.cpu_scope = cpu, dram, scope

    def _interval_s(self, counter: ExtendedCounter) -> float:
        wrap_s = counter.range / 1e6 / MAX_POWER_W
        return max(0.001, min(self._poll_interval_s, wrap_s / 4))

    def _attach(self) -> None:
        if self._attached:
            return
        with self._lock:
            if self._attached:
                return
            self._attached = True
        poller = self._poller if self._poller is not None else get_poller()
        for counter in (*self._cpu, *self._dram):
            counter.attach(poller, self._interval_s(counter))

    def start(self) -> _Snapshot | None:
        """Read every selected counter (extended, µJ); start the shared poller on first use.

        Returns:
            The snapshot, or ``None`` if a counter could not be read (warned once).
        """
        if not self.available():
            return None
        self._attach()
        try:
            return _Snapshot(
                tuple(c.reading() for c in self._cpu), tuple(c.reading() for c in self._dram)
            )
        except (OSError, ValueError) as e:
            _warn(f"rapl-read:{self.root}", "tasktrace: cannot read RAPL counters (%s)", e)
            return None

    def read(self, snapshot: object, elapsed_s: float, *, final: bool) -> MeterReading:
        """Return the energy since ``snapshot``, in joules (µJ counter deltas / 10⁶).

        Args:
            snapshot: What :meth:`start` returned.
            elapsed_s: Seconds since the task started.
            final: Unused: the counters are cheap to read at every refresh.

        Returns:
            ``cpu_power``, ``cpu_energy_source``, ``cpu_energy_scope``,
            ``cpu_energy_short_task`` (where CPU zones exist) and ``dram_energy_j`` (where DRAM
            zones exist); values are ``None`` where a counter could not be read, or glitched
            (stepped back without wrapping) since the snapshot.
        """
        del final
        out: dict[str, object] = {}
        cpu_j: float | None = None
        dram_j: float | None = None
        if isinstance(snapshot, _Snapshot):
            try:
                cpu_j = _delta_j(snapshot.cpu_uj, self._cpu)
                dram_j = _delta_j(snapshot.dram_uj, self._dram)
            except (OSError, ValueError) as e:
                _warn(f"rapl-read:{self.root}", "tasktrace: cannot read RAPL counters (%s)", e)
                cpu_j = dram_j = None
        if self._cpu:
            out["cpu_power"] = cpu_j
            out["cpu_energy_source"] = "rapl" if cpu_j is not None else None
            out["cpu_energy_scope"] = self.cpu_scope if cpu_j is not None else None
            out["cpu_energy_short_task"] = elapsed_s < RAPL_UPDATE_PERIOD_S
        if self._dram:
            out["dram_energy_j"] = dram_j
        return out
