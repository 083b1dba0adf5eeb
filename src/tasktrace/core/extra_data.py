"""The user's extra task data in its JSON form, as ``Task("x", **data)`` and ``t.key = v`` keep it.

Extra data is stored as JSON, as LensKit's ``Task`` (a pydantic model allowing extra data)
writes it; :func:`normalise_data` turns a value into that form once, where it is given, so the
task, its file and its span hold the same data. The span mapping of the result is
:func:`tasktrace.core.attributes.data_to_attributes`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Final

from pydantic_core import PydanticSerializationError, to_jsonable_python

__all__ = ["NON_FINITE_TEXT", "TAGS", "normalise_data", "restore_non_finite"]

TAGS: Final = "tags"
"""The extra data key of a task's tags: a list of strings (see :func:`normalise_data`)."""


def normalise_data(key: str, value: Any) -> Any:
    """Return extra task data ``value`` as plain JSON-compatible Python data.

    The value is stored as pydantic serialises it to JSON (``pydantic_core.to_jsonable_python``,
    as LensKit's ``Task``, a pydantic model that allows extra data, writes it): ``datetime``,
    ``date`` and ``time`` as ISO 8601 text, ``Path``, ``UUID``, ``Decimal`` and ``complex`` as
    strings, ``set``, ``frozenset`` and ``tuple`` as lists, ``bytes`` as UTF-8 text, enums as
    their values; dict keys as strings (JSON's object keys are: ``{0: 0.9}`` is ``{"0": 0.9}``).

    NumPy, PyTorch and pandas values are converted wherever they are, in lists, tuples, sets
    and dicts, as values and as keys: a NumPy or PyTorch scalar or array (0-d, masked, any
    shape) by its ``tolist()`` (a masked item becomes ``None``), or ``item()``; a pandas Series
    as the list of its values when its index is the default ``0, 1, 2, …``, else as a dict
    ``{label: value}``; a DataFrame as ``{column: that form of the column}``. A scikit-learn
    ``cross_validate`` result or ``cv_results_`` is a dict of lists. Large arrays are converted
    in C (``tolist``), never element by element in Python.

    Floats are kept as they are, NaN and infinities included (a task file writes them as the
    strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``: see
    :class:`tasktrace.core.record.TaskRecord`).

    ``tags`` is a list of strings (what ``show --filter`` and ``table --by tags`` read): one
    string is one tag (``tags="train"`` → ``["train"]``, not a string of letters), a tuple or
    set of strings a list; ``None`` is kept.

    A ``None``, ``bool``, ``int``, ``float`` or ``str`` is returned as it is, with no other
    work (this runs for every keyword of every ``Task`` and every assignment). Thread-safe (no
    shared state).

    Raises:
        TypeError: The value is, or holds, something with no JSON form (an arbitrary object,
            a function, bytes that are not UTF-8) or an iterator (an open file, a generator:
            serialising it would use it up); ``tags`` that are not strings (``tags=5``,
            ``tags=[1]``). The message names the key, the offending item's type and where it
            is (``cv['estimator'][0]``), and what to store instead.
    """
    if key == TAGS:
        return _tags(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _jsonable(key, value)


def _tags(value: Any) -> list[str] | None:
    """Return ``tags`` as a list of strings: one string is one tag (see :func:`normalise_data`)."""
    if value is None or isinstance(value, str):
        return value if value is None else [value]
    tags = _jsonable(TAGS, value)
    if isinstance(tags, list) and all(isinstance(tag, str) for tag in tags):
        return tags
    held = "a list holding " if isinstance(tags, list) else ""
    wrong = next(t for t in tags if not isinstance(t, str)) if held else tags
    raise TypeError(
        f"task data 'tags' must be a list of strings (or one string, one tag), "
        f"not {held}{type(wrong).__name__}: {wrong!r}"
    )


def _jsonable(key: str, value: Any) -> Any:
    """Return ``value`` as pydantic writes it to JSON, NumPy / pandas values converted."""
    if not _holds_iterator(value):  # pydantic would read it to the end: the user's, used up
        try:
            return to_jsonable_python(value, fallback=_converted)
        except (TypeError, ValueError, RecursionError):  # PydanticSerializationError, Unicode…
            pass
        try:  # pandas' NaT is a datetime to pydantic, which cannot write it: a gap, None
            return to_jsonable_python(_without_nat(value), fallback=_converted)
        except (TypeError, ValueError, RecursionError):
            pass
    raise _unstorable(key, value)


def _without_nat(value: Any) -> Any:
    """``value`` with pandas' ``NaT`` as ``None`` in its dicts, lists and tuples (a copy)."""
    if type(value).__name__ == "NaTType":
        return None
    if isinstance(value, Mapping):
        return {k: _without_nat(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_without_nat(v) for v in value]
    return value


_CONTAINERS: Final = (Mapping, list, tuple, set, frozenset)


def _holds_iterator(value: object) -> bool:
    """Whether ``value`` is or holds (in dicts, lists, tuples, sets) an iterator.

    pydantic serialises an iterator by iterating it, which would use up the caller's object.
    Only the containers in ``value`` are looked into: their items' types are taken in C (a
    list of a million floats or NumPy scalars: one ``set(map(type, ...))``), and only items
    of a container or iterator type are visited.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Iterator):
            return True
        items: Any
        if isinstance(item, Mapping):
            items = item.values()
        elif isinstance(item, list | tuple | set | frozenset):
            items = item
        else:
            continue
        kinds = set(map(type, items))
        if kinds <= _SCALARS:  # the usual: numbers and strings, nothing to look into
            continue
        if any(issubclass(kind, _CONTAINERS) or issubclass(kind, Iterator) for kind in kinds):
            stack.extend(x for x in items if isinstance(x, _LOOK_INTO))
    return False


_SCALARS: Final = frozenset({int, float, str, bool, type(None)})
_LOOK_INTO: Final = (*_CONTAINERS, Iterator)


def _converted(value: Any) -> Any:
    """Return the JSON-ready form of a value pydantic does not know (its ``fallback``).

    pydantic calls it for each such value wherever it is (dict keys too) and serialises what it
    returns, so an object array's NumPy scalars are converted in their turn.

    Raises:
        TypeError: The value has no such form (no ``tolist``, ``item``, not pandas).
    """
    if type(value).__module__.partition(".")[0] == "pandas":
        if type(value).__name__ in _PANDAS_MISSING:  # pd.NA, pd.NaT: a gap, as NaN is
            return None
        form = _pandas_form(value) if hasattr(value, "index") else None
        if form is not None:
            return form
    for method in ("tolist", "item"):
        convert = getattr(value, method, None)
        if callable(convert):
            try:
                form = convert()
            except (TypeError, ValueError, RuntimeError):
                continue
            if type(form) is not type(value):  # else pydantic would ask again, without end
                return form
    raise TypeError(f"{_type_name(value)} has no JSON form")


_PANDAS_MISSING: Final = frozenset({"NAType", "NaTType"})
"""pandas' missing-value types (``pd.NA``, ``pd.NaT``), stored as ``null``."""


def _pandas_form(value: Any) -> Any:
    """Return a pandas Series or DataFrame as a list or dict (:func:`normalise_data`), or None.

    Its gaps (``NaN``, ``pd.NA``, ``NaT``: what ``isna()`` finds) are ``None``: a ``NaT`` in a
    datetime column is a ``datetime`` to pydantic, which cannot write it.
    """
    index = value.index
    default = type(index).__name__ == "RangeIndex" and index.start == 0 and index.step == 1
    if hasattr(value, "isna") and hasattr(value, "where") and bool(value.isna().to_numpy().any()):
        value = value.astype(object).where(value.notna(), None)
    if hasattr(value, "columns"):  # a DataFrame
        return value.to_dict(orient="list" if default else "dict")
    if hasattr(value, "to_dict"):  # a Series
        return value.tolist() if default else value.to_dict()
    return None


def _type_name(value: object) -> str:
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"


def _unstorable(key: str, value: object) -> TypeError:
    """Return the TypeError for ``value``: what in it has no JSON form, where, what to store."""
    where, item, problem = _first_unstorable(key, value)
    at = "" if where == key else f" at {where}"
    if isinstance(item, Iterator):
        advice = "store a list of what it gives (list(...)) instead"
        problem = "is an iterator (storing it would use it up)"
    else:
        advice = (
            "store numbers, strings, lists or dicts made from it instead "
            "(str(value) for its text, or the numbers you want from it)"
        )
    return TypeError(
        f"task data {key!r} cannot be stored: {_type_name(item)}{at} {problem}; {advice}"
    )


def _first_unstorable(key: str, value: object) -> tuple[str, object, str]:
    """Find what in ``value`` has no JSON form: ``(where, the item, what is wrong)``.

    ``where`` is a Python expression from ``key`` (``cv['estimator'][0]``, ``a key of
    counts``). Only run when storing failed, so a walk in Python costs nothing on the way in.
    """
    stack: list[tuple[str, object]] = [(key, value)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, Iterator):
            return where, item, ""
        if isinstance(item, Mapping):
            inner: list[tuple[str, object]] = []
            for k, v in item.items():
                problem = _problem(k)
                if problem is not None:
                    return f"a key of {where}", k, problem
                inner.append((f"{where}[{k!r}]", v))
            stack.extend(reversed(inner))
        elif isinstance(item, list | tuple):
            stack.extend(reversed([(f"{where}[{i}]", v) for i, v in enumerate(item)]))
        elif isinstance(item, set | frozenset):
            stack.extend((f"an item of {where}", v) for v in item)
        else:
            problem = _problem(item)
            if problem is None:
                continue
            try:  # an array or a DataFrame holding an object: look into its converted form
                stack.append((where, _converted(item)))
            except TypeError:
                return where, item, problem
    return key, value, "has no JSON form"  # cannot happen: storing it failed


def _problem(item: object) -> str | None:
    """Return what stops ``item`` (not a container) being stored, or ``None`` if nothing does."""
    try:
        to_jsonable_python(item, fallback=_converted)
    except (PydanticSerializationError, TypeError):
        return "has no JSON form"
    except (ValueError, RecursionError) as e:  # bytes that are not UTF-8
        return f"has no JSON form ({e})"
    return None


NON_FINITE_TEXT: Final = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
"""The strings a task file holds for NaN and the infinities (pydantic's
``ser_json_inf_nan="strings"``), and the floats they stand for."""


def restore_non_finite(extra: dict[str, Any]) -> None:
    """Turn the strings a task file writes for NaN and infinities back into floats, in place.

    For extra data read from a file (a field gets its float from its type; extra data has
    none): a value that is exactly ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``, at any depth
    of lists and dicts, becomes the float, so a diverged loss read back is the NaN it was
    (``read_tasks`` columns stay numeric). A string data value spelt so reads back as the float
    too: the price of strict JSON files. Values without such a string are left as they are
    (the same objects), at the cost of one look at each.
    """
    for key, value in extra.items():
        restored = _restored(value)
        if restored is not value:
            extra[key] = restored


def _restored(value: Any) -> Any:
    """``value`` with :data:`NON_FINITE_TEXT` strings as floats; ``value`` itself if none."""
    if type(value) is str:
        return NON_FINITE_TEXT.get(value, value)
    if type(value) is list:
        items = [_restored(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    if type(value) is dict:
        pairs = {k: _restored(v) for k, v in value.items()}
        return pairs if any(pairs[k] is not value[k] for k in value) else value
    return value
