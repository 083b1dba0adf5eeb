"""The shape of the settings models, for messages: which keys a table takes, which are unknown.

Walks :class:`pydantic.BaseModel` settings models (nested models, mappings of models, mappings
whose keys are a fixed set, :data:`KNOWN_KEYS`) without validating anything; used by
:mod:`tasktrace.core.settings_sources` (unknown keys) and :mod:`tasktrace.core.settings` (what a
table's key expected).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, get_args, get_origin

from pydantic import BaseModel

__all__ = ["KNOWN_KEYS", "table_keys", "unknown_keys"]

KNOWN_KEYS = "known_keys"
"""``json_schema_extra`` entry of a mapping field whose keys are a fixed set (``power_queries``)."""


def _model_of(annotation: Any) -> type[BaseModel] | None:
    is_model = isinstance(annotation, type) and issubclass(annotation, BaseModel)
    return annotation if is_model else None


def table_keys(model: type[BaseModel], path: tuple[str, ...]) -> list[str] | None:
    """Return the keys the table at ``path`` of ``model`` takes, or ``None`` if it is no table.

    A nested model's fields (``prometheus``: ``url``, ``timeout_s``...), a mapping's
    :data:`KNOWN_KEYS` (``power_queries``: ``system``, ``cpu``, ``gpu``), or ``[]`` for a
    mapping of free names (``machines``). Pure, thread-safe.
    """
    annotation: Any = model
    extra: Any = None
    for part in path:
        nested = _model_of(annotation)
        if nested is not None:
            field = nested.model_fields.get(part)
            if field is None:
                return None
            annotation, extra = field.annotation, field.json_schema_extra
        elif get_origin(annotation) is dict:
            annotation, extra = get_args(annotation)[1], None
        else:
            return None
    nested = _model_of(annotation)
    if nested is not None:
        return list(nested.model_fields)
    if get_origin(annotation) is not dict:
        return None
    known = extra.get(KNOWN_KEYS) if isinstance(extra, dict) else None
    return [str(key) for key in known] if isinstance(known, list) else []


def unknown_keys(
    values: Mapping[str, Any], model: type[BaseModel], path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], list[str]]]:
    """Yield the key path of each key of ``values`` (nested mappings) that ``model`` does not know.

    Tables are followed into nested models and into mappings of models (``[machines.NAME]``,
    whose names are free); a mapping field whose ``json_schema_extra`` lists its
    :data:`KNOWN_KEYS` (``power_queries``) is checked against them. A model with
    ``extra="allow"`` (LensKit's own machine table) takes any other key.

    Args:
        values: Raw settings, as read from a file or built from variables.
        model: The settings model ``values`` should match.
        path: Key path of ``values`` itself.

    Returns:
        An iterator of ``(key path, the keys known at that level)``; pure, thread-safe.
    """
    fields = model.model_fields
    for key, value in values.items():
        field = fields.get(key)
        if field is None:
            if model.model_config.get("extra") != "allow":
                yield (*path, key), list(fields)
            continue
        nested = _model_of(field.annotation)
        if nested is not None:
            if isinstance(value, Mapping):
                yield from unknown_keys(value, nested, (*path, key))
            continue
        if get_origin(field.annotation) is not dict or not isinstance(value, Mapping):
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        known = extra.get(KNOWN_KEYS)
        items = _model_of(get_args(field.annotation)[1])
        for name, item in value.items():
            if isinstance(known, list) and name not in known:
                yield (*path, key, name), [str(k) for k in known]
            elif items is not None and isinstance(item, Mapping):
                yield from unknown_keys(item, items, (*path, key, name))
