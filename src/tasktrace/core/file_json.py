"""The task-file serialiser: the task model's own JSON, without its per-field Python calls.

A task file is the root task's ``model_dump_json()``: pydantic's serialiser walks the tree in
Rust, but the model's schema makes it call back into Python for every node: for each of
tasktrace's own fields, the ``exclude_if`` test that leaves it out while unset (seventeen calls
a node), for the status, the enum's ``value`` property, and for each subtask, a look-up of its
class's serialiser (the subtasks are ``SerializeAsAny``). A file is the whole tree, written
at the root's start, at each refresh and at its finish: about 31,500 instructions a task
(valgrind), of which those calls are about 5,500.

:func:`build_file_serializer` builds, once, a serialiser from the same core schema that writes
the same bytes with none of those calls:

- tasktrace's own fields keep their default (``None``, ``False``) and lose ``exclude_if``; the
  serialiser runs with ``exclude_defaults``, which compares each with its default in Rust (the
  seed's fields have their default taken off the serialisation schema, so they are always
  written, ``null`` included, as before);
- the status is written as the string it is (a ``str`` enum): the same text;
- subtasks are serialised by this same schema, with no look-up per node.

:class:`FileJson` uses it for trees whose nodes are all of classes with the node class's
fields and serialisation (:func:`plain_class`); a tree holding a node of a user's subclass
that adds a field or a serialiser gets the model's own (polymorphic) serialiser. The tree is
walked for that only where such a subclass exists. About 26,000 instructions a task (what is
left is pydantic-core's own work per field: 34 fields a node).
"""

from __future__ import annotations

import copy
import weakref
from typing import Any

from pydantic import BaseModel
from pydantic_core import SchemaSerializer

__all__ = ["FileJson"]


class _FileNode:
    """The serialisation schema's class.

    Not a model, so pydantic-core never swaps in the class's own (prebuilt) serialiser; any
    object with a ``__dict__`` passes its check.
    """


class FileJson:
    """Serialises a task tree for its file: the file serialiser where it can, else the model's.

    Args:
        base: The task record class; its fields with an ``exclude_if`` are the optional ones
            (left out while they hold their default).

    Thread-safe: the state is replaced whole (a race builds two equal serialisers).
    """

    def __init__(self, base: type[BaseModel]) -> None:
        """Serialise with each node's own serialiser until :meth:`bind` is called."""
        self._base = base
        self._optional = frozenset(
            name for name, field in base.model_fields.items() if field.exclude_if is not None
        )
        self._node_class: type[BaseModel] | None = None
        # class → whether the file serialiser writes it (weakly: a test's classes come and go)
        self._plain: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()
        self._fast: tuple[SchemaSerializer, dict[str, Any]] | None = None

    def bind(self, node_class: type[BaseModel]) -> None:
        """Build the file serialiser of ``node_class`` (the tree's node class)."""
        self._node_class = node_class
        self._plain = weakref.WeakKeyDictionary()
        self._fast = build_file_serializer(node_class, self._optional)

    def to_json(self, task: BaseModel) -> bytes:
        """Return ``task``'s tree as one line of JSON, as ``task.model_dump_json()`` writes it.

        Raises what pydantic's ``to_json`` raises (``PydanticSerializationError``,
        ``ValueError``, ``RecursionError``).
        """
        fast = self._fast
        if fast is not None and (self._all_plain() or self._tree_plain(task)):
            serializer, kwargs = fast
            return serializer.to_json(task, **kwargs)
        return task.__pydantic_serializer__.to_json(task)

    def _is_plain(self, cls: type) -> bool:
        ok = self._plain.get(cls)
        if ok is None:
            node_class = self._node_class
            assert node_class is not None  # set with the fast serialiser
            ok = cls is node_class or self._base is cls or plain_class(cls, node_class)
            self._plain[cls] = ok
        return ok

    def _all_plain(self) -> bool:
        """Whether every subclass of the record class serialises as the node class does.

        A handful of classes (the record, ``Task``, a user's subclasses): walked at each file
        write, not per task.
        """
        stack = self._base.__subclasses__()
        while stack:
            cls = stack.pop()
            if not self._is_plain(cls):
                return False
            stack.extend(cls.__subclasses__())
        return True

    def _tree_plain(self, task: BaseModel) -> bool:
        """Whether every node of ``task``'s tree is of a class the file serialiser writes.

        Walked only where a program defined a subclass that is not (a user's ``MyTask``).
        """
        node_class, is_plain = self._node_class, self._is_plain
        stack = [task]
        while stack:
            node = stack.pop()
            cls = type(node)
            if cls is not node_class and not is_plain(cls):
                return False
            stack.extend(node.__dict__["subtasks"])
        return True


def build_file_serializer(  # noqa: PLR0911 - each return: a schema this module does not know
    node_class: type[BaseModel], optional: frozenset[str]
) -> tuple[SchemaSerializer, dict[str, Any]] | None:
    """Return the file serialiser of ``node_class`` and the keywords to call it with.

    Args:
        node_class: The task model (the bound node class); its core schema is copied.
        optional: The fields left out of a file while they hold their default (the fields
            whose ``exclude_if`` says so); every other field is always written.

    Returns:
        ``(serializer, {"exclude_defaults": True})``; ``None`` when the schema is not the
        shape this module knows (a pydantic release that changed it): the caller then uses the
        model's own serialiser.
    """
    try:
        schema = copy.deepcopy(node_class.__pydantic_core_schema__)
        (model,) = schema["definitions"]
        ref = model["ref"]
        fields = model["schema"]["fields"]
        if model["type"] != "model" or not optional <= fields.keys() or "subtasks" not in fields:
            return None
        for name, field in fields.items():
            inner = field["schema"]
            if name in optional:
                exclude_if = field.pop("serialization_exclude_if", None)
                if exclude_if is None or inner["type"] != "default" or "default" not in inner:
                    return None
                if exclude_if(inner["default"]) is not True:  # the default is what is left out
                    return None
            elif inner["type"] == "default":
                field["schema"] = inner["schema"]  # no default: never left out
            if "serialization_exclude_if" in field:
                return None
        status = fields["status"]["schema"]
        if status["type"] != "enum" or status.get("sub_type") != "str":
            return None
        fields["status"]["schema"] = {"type": "str"}
        subtasks = fields["subtasks"]["schema"]  # the list, under the before-validator
        while subtasks["type"] != "list":
            subtasks = subtasks["schema"]
        items = subtasks["items_schema"]
        if items.get("type") != "definition-ref" or items.get("schema_ref") != ref:
            return None
        items.pop("serialization", None)  # SerializeAsAny: a look-up per node
        model["cls"] = _FileNode
        return SchemaSerializer(schema, model["config"]), {"exclude_defaults": True}
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def plain_class(cls: type[BaseModel], node_class: type[BaseModel]) -> bool:
    """Whether ``cls``'s nodes serialise as ``node_class``'s (the file serialiser may write them).

    True when it has the same fields, configuration and serialiser functions (none of its own):
    a subclass that adds only methods. Thread-safe (reads the classes).
    """
    decorators = cls.__pydantic_decorators__
    fields, node_fields = cls.model_fields, node_class.model_fields
    return (
        fields.keys() == node_fields.keys()
        and all(repr(fields[k]) == repr(node_fields[k]) for k in fields)
        and cls.model_config == node_class.model_config
        and not decorators.field_serializers
        and not decorators.model_serializers
        and not decorators.computed_fields
    )
