"""Where tasktrace's settings come from: a LensKit project's files and variables, then its own.

Sources, lowest first; each is merged over the ones below it key by key (a file holding only
``[prometheus] scrape_interval_s`` hides no other key of the files below it):

1. the defaults of :class:`tasktrace.core.settings.Settings`;
2. ``lenskit.toml``, then 3. ``lenskit.local.toml``, in the project folder: ``LK_PROJECT_ROOT``
   where set (the ``lenskit`` command's project root), else the working folder, as LensKit's
   ``lenskit.config.configure()`` looks them up;
4. ``tasktrace.toml`` in the same folder, or the file named by ``TASKTRACE_CONFIG``;
5. ``LK_*`` environment variables (LensKit's: ``LK_MACHINE``, ``LK_PROMETHEUS__URL``,
   ``LK_MACHINES__NAME__POWER_QUERIES__SYSTEM``; ``__`` nests);
6. ``TASKTRACE_*`` environment variables (``TASKTRACE_PROMETHEUS__SCRAPE_INTERVAL_S``);
7. values given in code (:func:`tasktrace.core.settings.load_settings` keyword arguments).

In LensKit's files tasktrace reads LensKit's keys with LensKit's meaning (``machine``,
``[prometheus] url``, ``[machines.NAME]`` with ``description``, ``power_queries`` and
tasktrace's ``carbon_intensity_g_per_kwh``) and its own keys from their ``[tasktrace]`` table;
a tasktrace-only key elsewhere in them is ignored with one warning saying where it belongs.
``tasktrace.toml`` holds any key, at the top level or under ``[tasktrace]``.

When the program has configured LensKit (``lenskit.config.configure()``), LensKit's live
settings object is used instead of sources 2, 3 and 5, never re-read: the values LensKit set
(from its files, wherever it found them, and from ``LK_*``) take the place of source 5, and its
``[tasktrace]`` table the place of source 2. It is detected without importing LensKit: only
when ``lenskit.config`` is already in :data:`sys.modules` and :func:`lenskit.config.lenskit_config`
returns the same object twice (unconfigured, LensKit builds a fresh default object per call).

Every source is a pydantic-settings source (:class:`~pydantic_settings.TomlConfigSettingsSource`,
:class:`~pydantic_settings.EnvSettingsSource`), and pydantic-settings merges them in this order
(``settings_customise_sources``; :func:`tasktrace.core.settings_layers.merge_layers`, which also
says where each value came from).
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_origin

from pydantic import BaseModel, Field

from tasktrace.core.settings_layers import (
    SettingsLayer,
    env_layers,
    read_toml,
    respell_machine_names,
)
from tasktrace.core.settings_schema import KNOWN_KEYS, unknown_keys

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "LENSKIT_ENV_PREFIX",
    "LENSKIT_FILES",
    "NOT_SETTINGS",
    "POWER_QUERY_SCOPES",
    "PROJECT_ROOT_ENV",
    "TASKTRACE_FILE",
    "TASKTRACE_TABLE",
    "LenskitKeys",
    "lenskit_live_settings",
    "project_folder",
    "settings_layers",
]

_log = logging.getLogger(__name__)

ENV_PREFIX = "TASKTRACE_"
"""Prefix of every tasktrace environment variable."""
LENSKIT_ENV_PREFIX = "LK_"
"""Prefix of LensKit's environment variables (``env_prefix`` of LensKit's settings)."""
CONFIG_ENV = "TASKTRACE_CONFIG"
"""Environment variable naming tasktrace's settings file (in place of ``tasktrace.toml``)."""
NOT_SETTINGS = ("CONFIG", "SPOOL", "PARENT_TASK_ID", "SKIP_SERVICES")
"""The ``TASKTRACE_*`` variables that are not settings: the settings file, a child process's
spool folder and parent task (:func:`tasktrace.child_environment`), and the test suite's switch."""
PROJECT_ROOT_ENV = "LK_PROJECT_ROOT"
"""LensKit's variable naming the project folder holding ``lenskit.toml``."""
LENSKIT_FILES = ("lenskit.toml", "lenskit.local.toml")
"""LensKit's settings files, lowest first (the local file overrides)."""
TASKTRACE_FILE = "tasktrace.toml"
"""tasktrace's own settings file in the project folder."""
TASKTRACE_TABLE = "tasktrace"
"""The table holding tasktrace's own keys in LensKit's files (and optionally in tasktrace.toml)."""

POWER_QUERY_SCOPES = ("system", "cpu", "gpu")
"""The scopes a machine's ``power_queries`` may name; a query under any other key is never run."""

_LENSKIT_ONLY_KEYS = frozenset({"random", "tuning"})
"""LensKit's top-level keys that tasktrace does not use (never reported as unknown)."""


class LenskitPrometheus(BaseModel):
    """LensKit's ``[prometheus]`` table: only ``url`` is LensKit's."""

    url: str | None = None
    """Base URL of the Prometheus server."""


class LenskitMachine(BaseModel, extra="allow"):
    """LensKit's ``[machines.NAME]`` table (other keys are kept, as LensKit keeps them)."""

    description: str | None = None
    """Free text describing the machine."""
    power_queries: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={KNOWN_KEYS: list(POWER_QUERY_SCOPES)}
    )
    """PromQL format strings by scope (``system``, ``cpu``, ``gpu``)."""


class LenskitKeys(BaseModel):
    """The keys of LensKit's settings that tasktrace reads, with LensKit's meaning.

    The schema of the ``LK_*`` variables tasktrace reads (``LK_MACHINE``,
    ``LK_PROMETHEUS__URL``, ``LK_MACHINES__NAME__POWER_QUERIES__SYSTEM``).
    """

    machine: str | None = None
    """Name of the machine running experiments (LensKit's ``machine``)."""
    prometheus: LenskitPrometheus = Field(default_factory=LenskitPrometheus)
    """LensKit's Prometheus settings."""
    machines: dict[str, LenskitMachine] = Field(default_factory=dict)
    """LensKit's machine definitions by name."""


def project_folder() -> Path:
    """Return the folder of the settings files: ``LK_PROJECT_ROOT``, else the working folder."""
    root = os.environ.get(PROJECT_ROOT_ENV)
    return Path(root) if root else Path()


def _lenskit_keys(values: Mapping[str, Any]) -> dict[str, Any]:
    """Return LensKit's keys of ``values`` (LensKit's file, variables or live settings)."""
    out = {k: values[k] for k in ("machine", "machines") if k in values}
    prometheus = values.get("prometheus")
    if isinstance(prometheus, dict):
        known = LenskitPrometheus.model_fields
        out["prometheus"] = {k: v for k, v in prometheus.items() if k in known}
    elif "prometheus" in values:  # not a table: kept, to be reported as an invalid value
        out["prometheus"] = prometheus
    return out


def _is_settings_file(path: Path, source: str | None = None) -> bool:
    """Whether ``path`` is a file to read; a folder there (or a named file missing) is warned."""
    if path.is_file():
        return True
    named = f" (from {source})" if source else ""
    if path.is_dir():
        _log.warning(
            "tasktrace: settings file %s%s is a folder, not a file; it is ignored", path, named
        )
    elif source:
        _log.warning("tasktrace: settings file %s%s does not exist", path, named)
    return False


def _lenskit_file_layers(path: Path, settings_cls: type[BaseModel]) -> list[SettingsLayer]:
    raw = read_toml(path) if _is_settings_file(path) else None
    if not raw:
        return []
    lenskit = _lenskit_keys(raw)
    prometheus = raw.get("prometheus")
    if isinstance(prometheus, dict):
        for key in sorted(set(prometheus) - set(LenskitPrometheus.model_fields)):
            _misplaced(path, f"prometheus.{key}", f"[{TASKTRACE_TABLE}.prometheus] {key}")
    for key in sorted(set(raw) - set(LenskitKeys.model_fields) - {TASKTRACE_TABLE}):
        if key in settings_cls.model_fields:
            nested = isinstance(raw[key], dict)
            home = f"[{TASKTRACE_TABLE}.{key}]" if nested else f"[{TASKTRACE_TABLE}] {key}"
            _misplaced(path, key, home)
    _report_unknown(lenskit, LenskitKeys, str(path))
    layers = [SettingsLayer.whole(str(path), lenskit, LenskitKeys)]
    table = raw.get(TASKTRACE_TABLE)
    if isinstance(table, dict):
        where = f"{path} [{TASKTRACE_TABLE}]"
        _report_unknown(table, settings_cls, where)
        layers.append(SettingsLayer.whole(where, table))
    return layers


def _misplaced(path: Path, key: str, home: str) -> None:
    _log.warning(
        "tasktrace: %s: %s is a tasktrace setting, not LensKit's; it is ignored there. Put it "
        "under %s in that file, or in %s",
        path,
        key,
        home,
        TASKTRACE_FILE,
    )


def _likely(path: tuple[str, ...], known: list[str]) -> tuple[str, ...] | None:
    """Return the key path most like ``path`` with its last key one of ``known``, if any."""
    close = difflib.get_close_matches(path[-1], known, n=1, cutoff=0.6)
    return (*path[:-1], close[0]) if close else None


def _report_unknown(values: Mapping[str, Any], model: type[BaseModel], where: str) -> None:
    table = {k: v for k, v in values.items() if k not in _LENSKIT_ONLY_KEYS | {TASKTRACE_TABLE}}
    for path, known in unknown_keys(table, model):
        close = _likely(path, known)
        _log.warning(
            "tasktrace: unknown setting %r in %s; it is ignored%s",
            ".".join(path),
            where,
            f" (did you mean {'.'.join(close)!r}?)" if close else "",
        )


def _variable_names(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, bool]]:
    """Yield each setting's variable name, and whether names below it are free (a mapping).

    A table's own name is one (``TASKTRACE_PROMETHEUS`` takes the table as a JSON object).
    """
    for key, field in model.model_fields.items():
        name, annotation = f"{prefix}{key.upper()}", field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield name, False
            yield from _variable_names(annotation, f"{name}__")
        else:
            yield name, get_origin(annotation) is dict


def _report_unknown_variables(settings_cls: type[BaseModel]) -> None:
    """Warn about each ``TASKTRACE_*`` variable that names no setting, with the likely name."""
    known = dict(_variable_names(settings_cls, ENV_PREFIX))
    free = tuple(f"{name}__" for name, is_mapping in known.items() if is_mapping)
    for variable in sorted(os.environ):
        name = variable.upper()
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.removeprefix(ENV_PREFIX) in NOT_SETTINGS:
            continue
        if name.startswith(free):  # free names (a machine's) first, then its table's keys
            _report_unknown_below(variable, settings_cls)
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        _log.warning(
            "tasktrace: unknown variable %s; it is ignored%s",
            variable,
            f" (did you mean {close[0]}?)" if close else "",
        )


def _report_unknown_below(variable: str, settings_cls: type[BaseModel]) -> None:
    """Warn about a variable below a mapping's free name (``TASKTRACE_MACHINES__NAME__...``)."""
    nested: Any = variable
    for part in reversed(variable.upper().removeprefix(ENV_PREFIX).lower().split("__")):
        nested = {part: nested}
    for path, known in unknown_keys(nested, settings_cls):
        close = _likely(path, known)
        likely = f"{ENV_PREFIX}{'__'.join(close).upper()}" if close else None
        _log.warning(
            "tasktrace: unknown variable %s; it is ignored%s",
            variable,
            f" (did you mean {likely}?)" if likely else "",
        )


def _tasktrace_file_layers(folder: Path, settings_cls: type[BaseModel]) -> list[SettingsLayer]:
    explicit = os.environ.get(CONFIG_ENV)
    path = Path(explicit) if explicit else folder / TASKTRACE_FILE
    if not _is_settings_file(path, CONFIG_ENV if explicit else None):
        return []
    raw = read_toml(path)
    if not raw:
        return []
    label = str(path)
    _report_unknown(raw, settings_cls, label)
    flat = {k: v for k, v in raw.items() if k != TASKTRACE_TABLE}
    layers = [SettingsLayer.whole(label, flat)]
    table = raw.get(TASKTRACE_TABLE)
    if isinstance(table, dict):
        where = f"{label} [{TASKTRACE_TABLE}]"
        _report_unknown(table, settings_cls, where)
        layers.append(SettingsLayer.whole(where, table))
    return layers


def lenskit_live_settings() -> BaseModel | None:
    """Return LensKit's settings object if this program configured LensKit, else ``None``.

    Never imports LensKit: ``None`` unless ``lenskit.config`` is already imported and
    ``lenskit_config()`` returns the same object twice, which it does only after
    ``lenskit.config.configure()`` (before, each call builds a new default object).
    """
    module = sys.modules.get("lenskit.config")
    current_settings = getattr(module, "lenskit_config", None)
    if current_settings is None:
        return None
    try:
        first = current_settings()
        configured = current_settings() is first
    except Exception as e:  # noqa: BLE001 - LensKit's own failure must not break tasks
        _log.warning("tasktrace: cannot read LensKit's settings (%r); reading its files", e)
        return None
    return first if configured and isinstance(first, BaseModel) else None


def _live_layers(
    live: BaseModel, settings_cls: type[BaseModel]
) -> tuple[SettingsLayer, SettingsLayer]:
    label = "lenskit.config.configure()"
    values = live.model_dump(exclude_unset=True)
    lenskit = _lenskit_keys(values)
    table = values.get(TASKTRACE_TABLE)
    table = table if isinstance(table, dict) else {}
    _report_unknown(table, settings_cls, f"{label} [{TASKTRACE_TABLE}]")
    return (
        SettingsLayer.whole(f"{label} [{TASKTRACE_TABLE}]", table),
        SettingsLayer.whole(label, lenskit, LenskitKeys),
    )


def settings_layers(
    settings_cls: type[BaseModel], overrides: Mapping[str, Any] | None = None
) -> list[SettingsLayer]:
    """Read every source of settings, lowest first (see the module docstring).

    Args:
        settings_cls: The settings model (its fields are the known keys and the schema of the
            ``TASKTRACE_*`` variables).
        overrides: Values given in code, highest of all.

    Returns:
        The layers that gave at least one value, lowest first. An unreadable file, a
        misplaced or unknown key is warned about (without its value) and left out; a
        variable that cannot be read is kept as text in a layer of its own, above the other
        variables of its prefix (:func:`~tasktrace.core.settings_layers.env_layers`), for
        :func:`~tasktrace.core.settings.load_settings` to report; nothing raises.
    """
    folder = project_folder()
    if os.environ.get(PROJECT_ROOT_ENV) and not folder.is_dir():
        _log.warning(
            "tasktrace: %s names %s, which is not a folder; no settings file is read there",
            PROJECT_ROOT_ENV,
            folder,
        )
    live = lenskit_live_settings()
    layers: list[SettingsLayer] = []
    if live is not None:
        below, lenskit_layer = _live_layers(live, settings_cls)
        layers.append(below)
    else:
        for name in LENSKIT_FILES:
            layers.extend(_lenskit_file_layers(folder / name, settings_cls))
    layers.extend(_tasktrace_file_layers(folder, settings_cls))
    if live is not None:
        layers.append(lenskit_layer)
    else:
        for lenskit_env in env_layers(LenskitKeys, LENSKIT_ENV_PREFIX, _lenskit_keys):
            _report_unknown(lenskit_env.values, LenskitKeys, lenskit_env.label)
            layers.append(lenskit_env)
    layers.extend(env_layers(settings_cls, ENV_PREFIX))
    _report_unknown_variables(settings_cls)
    if overrides:
        layers.append(SettingsLayer.whole("code", dict(overrides)))
    return respell_machine_names([layer for layer in layers if layer.values])
