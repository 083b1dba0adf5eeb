"""Settings layers and their merge: each layer's raw values, and where each value came from.

A layer is one source of settings (a file, a set of environment variables, code), read by a
pydantic-settings source. :func:`merge_layers` merges them key by key through pydantic-settings
(``settings_customise_sources``) and says which layer gave each value. Which layers there are,
and in which order: :mod:`tasktrace.core.settings_sources`.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

__all__ = [
    "SettingsLayer",
    "env_layers",
    "has_key_path",
    "leaf_paths",
    "lower_value",
    "merge_layers",
    "origin_of",
    "read_toml",
    "respell_machine_names",
]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SettingsLayer:
    """One source of settings values, with a way to say where each of its values came from.

    Attributes:
        label: The source in words: a file path (``lenskit.local.toml``), ``LK_* variables``...
        values: The raw values it gives (nested dicts, not yet validated).
        describe: Maps a key path of ``values`` to the place it came from: the file (with the
            ``[tasktrace]`` table where it was there), the environment variable's name, or
            ``lenskit.config.configure()``.
        in_environment: Whether ``describe`` gives variable names (messages then name the
            variable alone; for files they name the key and the file).
        schema: The model of the keys this source may set, where it is not all of
            tasktrace's (LensKit's keys, for messages saying what a table takes); ``None``:
            all of them.
    """

    label: str
    values: dict[str, Any]
    describe: Callable[[tuple[str, ...]], str]
    in_environment: bool = False
    schema: type[BaseModel] | None = None

    @classmethod
    def whole(
        cls, label: str, values: dict[str, Any], schema: type[BaseModel] | None = None
    ) -> SettingsLayer:
        """Return a layer whose every value comes from one place, ``label`` (a file)."""
        return cls(label, values, lambda _path: label, schema=schema)

    def where(self, path: tuple[str, ...]) -> str:
        """Return the key at ``path`` and its place, for messages: ``a.b in lenskit.toml``."""
        place = self.describe(path)
        return place if self.in_environment else f"{'.'.join(path)} in {place}"


class _Given(PydanticBaseSettingsSource):
    """A pydantic-settings source returning one layer's values (already read)."""

    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # values are given whole, by __call__

    def __call__(self) -> dict[str, Any]:
        return self._values


class _Merged(BaseSettings):
    """Every layer merged by pydantic-settings, kept raw (``extra="allow"``, no fields)."""

    model_config = SettingsConfigDict(extra="allow")
    layers: ClassVar[tuple[SettingsLayer, ...]] = ()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Return the layers, highest first (pydantic-settings' order)."""
        return tuple(_Given(settings_cls, layer.values) for layer in reversed(cls.layers))


def read_toml(path: Path) -> dict[str, Any] | None:
    """Return a TOML file's tables, or ``None`` (with one warning) when it cannot be read."""
    try:
        return TomlConfigSettingsSource(_Merged, toml_file=path)()
    except (OSError, ValueError) as e:  # tomllib.TOMLDecodeError is a ValueError
        _log.warning("tasktrace: cannot read settings file %s (%s); it is ignored", path, e)
        return None


def env_layers(
    settings_cls: type[BaseModel],
    prefix: str,
    keep: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
) -> list[SettingsLayer]:
    """Read the variables ``prefix`` + a key of ``settings_cls`` (``__`` nests), key by key.

    Each variable is read alone (by pydantic-settings'
    :class:`~pydantic_settings.EnvSettingsSource`), so one that cannot be read (a table's
    variable holding no JSON object: ``TASKTRACE_PROMETHEUS=http://...`` for
    ``TASKTRACE_PROMETHEUS__URL``) costs no other variable its value; the values read are
    merged as pydantic-settings merges them (a table's JSON, then its keys' own variables).

    Args:
        settings_cls: The schema of the variables (its fields are the keys).
        prefix: ``TASKTRACE_`` or ``LK_``.
        keep: Picks the values a layer gives out of what the variables hold.

    Returns:
        Up to two layers, lowest first (their ``describe`` names the variable of each key
        path): the values read, then the text of each variable that could not be read, at
        its key path, for :func:`tasktrace.core.settings.load_settings` to report as an
        invalid value and replace by the value below it. Empty when no variable gives a value.
    """
    source = EnvSettingsSource(
        settings_cls,  # type: ignore[arg-type]  # only its fields and config are read
        env_prefix=prefix,
        env_nested_delimiter="__",
    )
    variables = dict(source.env_vars)  # names in lower case, as the source matches them
    values: dict[str, Any] = {}
    unread: dict[str, Any] = {}
    for name in sorted(n for n in variables if n.lower().startswith(prefix.lower())):
        source.env_vars = {name: variables[name]}  # a table's JSON sorts before its keys
        try:
            _merge_into(values, source())
        except SettingsError:  # a table's value that is not a JSON object
            _merge_into(unread, _nested(name[len(prefix) :].lower().split("__"), variables[name]))
    names = {name.upper(): name for name in os.environ if name.upper().startswith(prefix)}

    def variable(path: tuple[str, ...]) -> str:
        # The longest prefix of the key path that is set: LK_MACHINES may hold the whole table.
        for end in range(len(path), 0, -1):
            name = prefix + "__".join(path[:end]).upper()
            if name in names:
                return names[name]
        return prefix + "__".join(path).upper()

    label = f"{prefix}* variables"
    return [
        SettingsLayer(label, kept, variable, in_environment=True, schema=settings_cls)
        for kept in (keep(values), keep(unread))
        if kept
    ]


def _nested(path: list[str], value: Any) -> dict[str, Any]:
    for part in reversed(path[1:]):
        value = {part: value}
    return {path[0]: value}


def _merge_into(target: dict[str, Any], values: Mapping[str, Any]) -> None:
    """Merge ``values`` into ``target`` key by key (tables merged, other values replaced)."""
    for key, value in values.items():
        current = target.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            _merge_into(current, value)
        else:
            target[key] = copy.deepcopy(value)


def leaf_paths(data: Mapping[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Yield the key path of every leaf of nested mappings (an empty mapping is a leaf)."""
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, (*path, str(key)))
        else:
            yield (*path, str(key))


def has_key_path(data: Mapping[str, Any], path: tuple[str, ...]) -> bool:
    """Whether ``data`` (nested mappings) holds a value at the key path ``path``."""
    target: Any = data
    for part in path:
        if not isinstance(target, Mapping) or part not in target:
            return False
        target = target[part]
    return True


def lower_value(
    layers: list[SettingsLayer], above: SettingsLayer, path: tuple[str, ...]
) -> tuple[Any, dict[tuple[str, ...], SettingsLayer]] | None:
    """Return the value at ``path`` that the layers below ``above`` give, merged key by key.

    Where a layer's value is invalid, the one it overrode stands instead (a valid
    ``metrics_durations`` in ``lenskit.toml`` under an invalid one in ``tasktrace.toml``; a
    table that ``TASKTRACE_PROMETHEUS`` spoiled is the other sources' ``[prometheus]``).

    Args:
        layers: As :func:`settings_layers` returns them, lowest first; ``above`` among them.
        above: The layer whose value at ``path`` was invalid.
        path: A key path, a leaf or a table.

    Returns:
        ``(value, origins)``, ``origins`` giving the layer of each leaf at or under ``path``
        (as :func:`merge_layers` does); ``None`` when no layer below gives ``path`` (the
        default then).
    """
    below = list(itertools.takewhile(lambda layer: layer is not above, layers))
    if not below:
        return None
    merged, origins = merge_layers(below)
    if not has_key_path(merged, path):
        return None
    value: Any = merged
    for part in path:
        value = value[part]
    return value, {leaf: layer for leaf, layer in origins.items() if leaf[: len(path)] == path}


def merge_layers(
    layers: list[SettingsLayer],
) -> tuple[dict[str, Any], dict[tuple[str, ...], SettingsLayer]]:
    """Merge ``layers`` key by key, the later over the earlier, with each value's layer.

    Args:
        layers: As :func:`settings_layers` returns them, lowest first.

    Returns:
        The merged raw values (merged by pydantic-settings, through
        ``settings_customise_sources``), and for each leaf key path (``("prometheus",
        "url")``) the layer its value came from.
    """
    merged_cls = type("MergedSettingsLayers", (_Merged,), {"layers": tuple(layers)})
    merged = copy.deepcopy(dict(merged_cls().model_extra or {}))  # changed by the caller
    origins: dict[tuple[str, ...], SettingsLayer] = {}
    for path in leaf_paths(merged):
        for layer in reversed(layers):
            if has_key_path(layer.values, path):
                origins[path] = layer
                break
    return merged, origins


def origin_of(
    origins: Mapping[tuple[str, ...], SettingsLayer], path: tuple[str, ...]
) -> tuple[tuple[str, ...], SettingsLayer] | None:
    """Return the leaf key path and layer that gave the value at ``path`` (or inside it).

    Args:
        origins: As :func:`merge_layers` returns them.
        path: A key path, a leaf or not (a validation error's location, say).

    Returns:
        The exact leaf, else the leaf holding ``path`` (a table given whole), else the first
        leaf inside ``path``; ``None`` when no source gave it (a default).
    """
    for end in range(len(path), 0, -1):
        if path[:end] in origins:
            return path[:end], origins[path[:end]]
    for leaf, layer in origins.items():
        if leaf[: len(path)] == path:
            return leaf, layer
    return None


def respell_machine_names(layers: list[SettingsLayer]) -> list[SettingsLayer]:
    """Give the machine names of variables the spelling they have in the other layers.

    Variable names are upper case and pydantic-settings reads them in lower case, so
    ``TASKTRACE_MACHINES__GPU_A__...`` gives a machine ``gpu_a``, which no lookup of the machine
    ``GPU_A`` (selected, or a ``[machines.GPU_A]`` table) would find. A name of a variable
    layer takes the spelling of the same name, in any case, as a selected ``machine`` (any
    layer; the highest wins) or a table of a file or code; a name found nowhere else stays as
    read.
    """
    spelling: dict[str, str] = {}
    for layer in layers:
        if not layer.in_environment:
            for name in _machine_names(layer.values):
                spelling.setdefault(name.casefold(), name)
    for layer in layers:
        selected = layer.values.get("machine")
        if isinstance(selected, str):
            spelling[selected.casefold()] = selected
    out = []
    for layer in layers:
        names = _machine_names(layer.values) if layer.in_environment else {}
        renamed = {n: spelling.get(n.casefold(), n) for n in names}
        if any(old != new for old, new in renamed.items()):
            machines = {renamed[n]: table for n, table in names.items()}
            out.append(dataclasses.replace(layer, values={**layer.values, "machines": machines}))
        else:
            out.append(layer)
    return out


def _machine_names(values: Mapping[str, Any]) -> dict[str, Any]:
    machines = values.get("machines")
    return dict(machines) if isinstance(machines, Mapping) else {}
