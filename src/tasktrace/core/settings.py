"""One settings table for tasktrace, read from a LensKit project's sources and tasktrace's own.

Precedence, highest first: keyword arguments to :func:`tasktrace.configure` (where they exist),
``TASKTRACE_*`` environment variables, LensKit's ``LK_*`` variables, ``tasktrace.toml`` (or the
file in ``TASKTRACE_CONFIG``), ``lenskit.local.toml``, ``lenskit.toml``, the defaults below;
merged key by key. Where each file is looked up, which keys LensKit's files and variables give,
and how a program's own ``lenskit.config.configure()`` is used:
:mod:`tasktrace.core.settings_sources`.

An invalid value in the environment or a file never breaks an import: it is reported by one
warning naming the variable (or the key and its file) and the value used instead (the one it
overrode, else the default), with no secret quoted (:func:`load_settings`).
"""

from __future__ import annotations

import copy
import logging
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError
from pydantic_settings import NoDecode

from tasktrace.core.forksafe import renew_after_fork
from tasktrace.core.problems import expected
from tasktrace.core.redact import mask_value
from tasktrace.core.settings_layers import (
    SettingsLayer,
    has_key_path,
    lower_value,
    merge_layers,
    origin_of,
)
from tasktrace.core.settings_schema import KNOWN_KEYS, table_keys
from tasktrace.core.settings_sources import (
    CONFIG_ENV,
    ENV_PREFIX,
    POWER_QUERY_SCOPES,
    settings_layers,
)
from tasktrace.core.units import MAX_SECONDS

__all__ = [
    "BUILTIN_METERS",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "EnergySettings",
    "MachineSettings",
    "PrometheusSettings",
    "Settings",
    "get_settings",
    "reset_settings",
]

_log = logging.getLogger(__name__)


def _takes_numbers(annotation: Any) -> bool:
    """Whether a field of this type takes a number (``float``, ``float | None``), not a bool."""
    kinds = get_args(annotation) if get_origin(annotation) in {Union, UnionType} else (annotation,)
    return float in kinds and bool not in kinds


class _NumbersAreNotBooleans(BaseModel):
    """Base of the settings models: a number setting refuses ``true``/``false`` in every source.

    Pydantic takes a boolean for a float (``True`` → 1.0), so TOML's ``exit_timeout_s =
    false`` was 0 s where ``TASKTRACE_EXIT_TIMEOUT_S=false`` was refused.
    """

    @field_validator("*", mode="before")
    @classmethod
    def _refuse_booleans(cls, value: object, info: ValidationInfo) -> object:
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _takes_numbers(field.annotation):
            raise PydanticCustomError("float_type", "Input should be a valid number")
        return value


class PrometheusSettings(_NumbersAreNotBooleans):
    """Where to query Prometheus for energy (the seed's ``[prometheus]`` table)."""

    url: str | None = None
    """Base URL of the Prometheus server, e.g. ``http://127.0.0.1:9090`` (``None``: no queries)."""
    timeout_s: float = Field(default=2.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    """Timeout of each query in seconds."""
    retry_after_s: float = Field(default=60.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    """After a failed query, seconds during which no query is sent (tasks get ``None``)."""
    scrape_interval_s: float = Field(default=15.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    """The ``scrape_interval`` of the energy series in Prometheus, in seconds.

    Tasks shorter than this are flagged (``*_energy_short_task``): the query cannot resolve them.
    """


class EnergySettings(_NumbersAreNotBooleans):
    """Options of the local energy meters (RAPL, NVML); the ``[energy]`` table."""

    rapl_root: Path = Path("/sys/class/powercap")
    """Root of the Linux powercap sysfs tree read by the RAPL meter."""
    counter_poll_interval_s: float = Field(default=1.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    """Seconds between background reads of wrapping counters (RAPL), at most.

    A zone with a short wrap period is read more often (4 times per wrap at 1 kW).
    """
    sample_interval_s: float = Field(default=0.1, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    """Seconds between power samples where energy must be integrated (NVML without counter)."""


class MachineSettings(_NumbersAreNotBooleans):
    """Settings of one machine label (the seed's ``[machines.NAME]`` table)."""

    description: str | None = None
    """Free text describing the machine."""
    power_queries: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={KNOWN_KEYS: list(POWER_QUERY_SCOPES)}
    )
    """PromQL format strings by scope (``system``, ``cpu``, ``gpu``; another key is warned about).

    Each may use ``{elapsed}`` (the task's duration in milliseconds) and ``{machine}``; the
    result is energy in joules over the task.
    """
    carbon_intensity_g_per_kwh: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Carbon intensity of this machine's electricity, in grams of CO₂-equivalent per kWh.

    Used by ``show``, ``report``, ``compare`` and ``table`` to add emissions computed from
    measured energy (1 kWh = 3.6 MJ); ``None``: no emissions are shown for this machine.
    """


BUILTIN_METERS = ("nvml", "prometheus", "rapl")
"""Names of the built-in energy meters, selectable with :attr:`Settings.meters`."""


class Settings(_NumbersAreNotBooleans):
    """All tasktrace settings, with defaults.

    Environment variables are ``TASKTRACE_`` + the upper-case field name, e.g.
    ``TASKTRACE_REFRESH_INTERVAL_S=30``; nested fields use ``__``
    (``TASKTRACE_PROMETHEUS__URL``).
    """

    machine: str | None = None
    """Project-meaningful label of this compute machine (the seed's ``machine``)."""
    refresh_interval_s: float = Field(default=10.0, gt=0, le=MAX_SECONDS, allow_inf_nan=False)
    """Seconds between refreshes of running tasks' files (the seed's monitor refresh); a slow
    refresh puts the next one off (:data:`tasktrace.tree.refresh.MAX_SHARE`)."""
    include_spans: bool = True
    """Whether non-task spans that run inside a task appear as subtasks in the tree."""
    reset_hwm: bool = True
    """Whether tasks without a parent in this process (top-level tasks, a pool worker's tasks)
    reset the process's RSS (and CUDA) high-water marks at their start by default, so that
    each one's ``peak_memory`` is its own (the seed's rule). ``False`` keeps the kernel's mark
    whole for the process's life (``wait4``, ``/usr/bin/time``, ``getrusage``, a scheduler's
    accounting), and such a task's ``peak_memory`` is the process's peak since it started. A
    task's own ``reset_hwm=`` argument wins over this setting."""
    exit_timeout_s: float = Field(default=5.0, ge=0, le=MAX_SECONDS, allow_inf_nan=False)
    """Seconds the interpreter's exit waits, in total, for the last spans to be exported."""
    prometheus: PrometheusSettings = Field(default_factory=PrometheusSettings)
    """Prometheus server used for energy queries."""
    machines: dict[str, MachineSettings] = Field(default_factory=dict)
    """Per-machine settings keyed by machine label."""
    meters: Annotated[list[str] | None, NoDecode] = None
    """Built-in energy meters to use, by name (``None``: every one that is available).

    In the environment, a comma-separated list: ``TASKTRACE_METERS=rapl,prometheus``; an empty
    value turns them all off. The names are in :data:`BUILTIN_METERS`; the process meters (CPU
    time, RSS, CUDA memory) are always read.
    """
    energy: EnergySettings = Field(default_factory=EnergySettings)
    """Options of the local energy meters."""
    pending_spans: bool = False
    """Export a zero-duration snapshot span of each running task at its start and at each
    refresh, so trace backends show running tasks (see the guide "Watching long runs")."""
    otlp_json_dir: Path | None = None
    """Write spans as OTLP JSON lines (one new file per run) into this folder, for offline
    clusters (see the guide "Offline clusters"); ``None``: no files. The exporter is also
    selectable as ``OTEL_TRACES_EXPORTER=tasktrace_otlp_json``."""
    metrics: bool | None = None
    """Record OpenTelemetry task metrics: ``True`` on, ``False`` off, ``None`` (default) when
    ``OTEL_METRICS_EXPORTER`` / ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is set or a global
    meter provider exists (see the guide "Watching long runs")."""
    metrics_durations: Literal["auto", "histogram", "sum"] = "auto"
    """How task metrics report durations: ``"histogram"``, the ``tasktrace.task.duration``
    histogram, every duration recorded into the OpenTelemetry SDK at collection (about 69,000
    instructions each); ``"sum"``, two counters instead, ``tasktrace.task.duration.sum``
    (seconds) and ``tasktrace.task.count``, which cost a finished task a few additions and
    nothing at collection; ``"auto"`` (default), the histogram where task metrics were asked
    for (the ``metrics`` setting true, or tasktrace's own meter provider, made because
    ``OTEL_METRICS_EXPORTER`` names an exporter or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT`` is
    set, or a provider handed to ``reset_metrics``) and the counters where they are on only
    because somebody's meter provider was found installed globally (Logfire's,
    ``opentelemetry-instrument``'s; its ``OTEL_*`` variables are its owner's). A provider
    keeps the choice it was first given. See :mod:`tasktrace.export.metrics`."""

    @field_validator("meters", mode="before")
    @classmethod
    def _split_meters(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip().lower() for name in value.split(",") if name.strip()]
        return value

    _origins: dict[tuple[str, ...], str] = PrivateAttr(default_factory=dict)

    @property
    def origins(self) -> Mapping[tuple[str, ...], str]:
        """Where each value that a file, a variable or code set came from, by key path.

        For example ``{("machine",): "lenskit.local.toml", ("prometheus", "url"):
        "LK_PROMETHEUS__URL"}``; a key not listed has its default. Empty for settings built in
        code (``Settings(...)``) rather than by :func:`load_settings`.
        """
        return self._origins

    @property
    def current_machine(self) -> MachineSettings | None:
        """The :class:`MachineSettings` of :attr:`machine`, or ``None`` if unset or unknown."""
        if self.machine is None:
            return None
        return self.machines.get(self.machine)


def _drop(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    target: Any = data
    for part in loc[:-1]:
        if not isinstance(target, dict) or part not in target:
            return
        target = target[part]
    if isinstance(target, dict):
        target.pop(loc[-1], None)


def _put(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = data
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def _value_at(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = data
    for part in path:
        value = value[part]
    return value


def _shown(path: tuple[str, ...], value: Any) -> str:
    """Quote a settings value for a message, its secrets masked as ``tasktrace config`` does."""
    return repr(mask_value(value, path[-1] if path else ""))


def _what_was_expected(
    error: ErrorDetails, key: tuple[str, ...], layer: SettingsLayer | None
) -> str:
    """Say what the value at ``key`` should have been: for a table, which keys it takes."""
    schema = layer.schema if layer is not None and layer.schema is not None else Settings
    keys = table_keys(schema, key) if error["type"] in {"model_type", "dict_type"} else None
    if keys is None:
        return expected(error)
    of = f" of {', '.join(keys)}" if keys else ""
    if layer is None or not layer.in_environment:
        return f"expected a table{of}"
    each = f"{layer.describe(key)}__{keys[0].upper() if keys else 'NAME'}"
    return f"expected a JSON object{of}, or one variable per key: {each}, ..."


def _instead(
    data: Mapping[str, Any],
    origins: Mapping[tuple[str, ...], SettingsLayer],
    defaults: Mapping[str, Any],
    key: tuple[str, ...],
) -> str:
    """Say what is used in place of the invalid values at ``key``: what stands there now, named."""
    if has_key_path(data, key):
        value = _value_at(data, key)
        places = [layer.where(p) for p, layer in origins.items() if p[: len(key)] == key]
        return f"using {_shown(key, value)} from {', '.join(dict.fromkeys(places))}"
    value = defaults
    for part in key:
        if not isinstance(value, Mapping) or part not in value:  # an item of a table or list
            return "it is left out"
        value = value[part]
    return (
        "using the default (none)" if value is None else f"using the default {_shown(key, value)}"
    )


def load_settings(**overrides: Any) -> Settings:
    """Build :class:`Settings` from every source (see the module docstring) and ``overrides``.

    Invalid values are dropped with one warning each, naming the variable (or the key and its
    file), what was expected (:func:`tasktrace.core.problems.expected`; for a table, its keys)
    and what is used instead, with its value: the value it overrode where a lower source gave
    a valid one (``using 'sum' from metrics_durations in lenskit.toml``; where the sources
    below are invalid too, each is warned about and every warning names the value finally
    used), else the default (``using the default 5.0``). No value is quoted with a secret:
    each is masked as ``tasktrace config`` masks it (:func:`tasktrace.core.redact.mask_value`).
    Keys tasktrace does not know are ignored (LensKit's other tables are harmless; unknown
    keys of tasktrace's own tables are warned about).
    :attr:`Settings.origins` says where each value came from.
    """
    layers = settings_layers(Settings, overrides)
    data, origins = merge_layers(layers)
    data = {k: v for k, v in data.items() if k in Settings.model_fields}
    settings = Settings()
    defaults = settings.model_dump()
    problems: dict[tuple[str, ...], list[tuple[Any, str, str]]] = {}  # key: (value, where, what)
    for _ in range(20):  # each round replaces or drops at least one bad value
        try:
            settings = Settings.model_validate(data)
            break
        except ValidationError as e:
            bad: dict[tuple[str, ...], SettingsLayer | None] = {}  # key: its layer
            for err in e.errors(include_url=False):
                loc = tuple(str(p) for p in err["loc"])
                found = origin_of(origins, loc)
                leaf, origin = found if found is not None else (loc, None)
                key = leaf if len(leaf) <= len(loc) else loc  # a table given whole, or a key
                where = origin.where(leaf) if origin is not None else ".".join(loc)
                what = _what_was_expected(err, key, origin)
                problems.setdefault(key, []).append((err.get("input"), where, what))
                bad.setdefault(key, origin)  # the items of a list given whole: one key
            for key, origin in bad.items():
                # The value the invalid one overrode stands instead, where a layer below gave
                # one (checked in the next round); else the default.
                lower = lower_value(layers, origin, key) if origin is not None else None
                for path in [p for p in origins if p[: len(key)] == key]:
                    del origins[path]
                if lower is not None:
                    _put(data, key, copy.deepcopy(lower[0]))
                    origins.update(lower[1])
                else:
                    _drop(data, key)
    for key, invalid in problems.items():
        instead = _instead(data, origins, defaults, key)  # the value finally used
        for value, where, what in invalid:
            _log.warning(
                "tasktrace: invalid value %s for %s (%s); %s",
                _shown(key, value),
                where,
                what,
                instead,
            )
    kept = settings.model_dump()  # the keys tasktrace knows, less the invalid values dropped
    settings._origins = {
        path: layer.describe(path)
        for path, layer in origins.items()
        if has_key_path(data, path) and has_key_path(kept, path)
    }
    return settings


_settings: Settings | None = None
_settings_lock = threading.Lock()
renew_after_fork(sys.modules[__name__], "_settings_lock")


def get_settings() -> Settings:
    """Return the process's settings, loading them on first use (thread-safe)."""
    global _settings  # noqa: PLW0603 - one process-wide settings object, loaded lazily
    current = _settings
    if current is None:
        with _settings_lock:
            if _settings is None:
                _settings = load_settings()
            current = _settings
    return current


def reset_settings(settings: Settings | None = None) -> None:
    """Replace the process's settings (``None``: reload from file and environment on next use)."""
    global _settings  # noqa: PLW0603 - see get_settings
    with _settings_lock:
        _settings = settings
