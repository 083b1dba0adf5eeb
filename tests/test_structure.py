"""The package's shape: layers without upward imports or cycles, small modules, no private reads.

Every module of ``src/tasktrace`` is parsed with :mod:`ast`; every import counts, wherever it
is: at the top, inside a function, and inside an ``if TYPE_CHECKING:`` block (such an import
does not run, so it cannot make a cycle at run time, but a lower layer naming an upper one's
types still knows it; the layers stay clean for type checkers too).

What :mod:`ast` can and cannot see for private names (``_name``, not ``__dunder__``):

- it sees ``from tasktrace.x import _y``, an import of a private module (``tasktrace._x``,
  ``tasktrace.x._y``), and ``mod._y`` where ``mod`` is a name bound to a tasktrace module;
- it sees ``obj._y`` on any other object when no class or function of the same module defines
  ``_y`` (a module may use its own classes' private members on their instances, as a class's
  methods do on other instances);
- it cannot tell the type of an object, so ``obj._y`` where ``_y`` happens to be defined in the
  same module too is let through, as are names reached with ``getattr`` and a string.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tasktrace"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("core",),
    ("meters",),
    ("tree",),
    ("export",),
    ("task",),
    ("formats",),
    ("integrations",),
    ("cli",),
    ("", "testing"),  # the package's __init__ (the public API) and testing.py: the top
)
"""The layers from the bottom up (first parts of module names below ``tasktrace``); a module
may import its own layer's modules and lower layers', never a higher layer's."""

MAX_LINES = 400
"""The most lines a module may have."""


@dataclass(frozen=True)
class Module:
    """One module of the package."""

    name: str
    path: Path
    tree: ast.Module

    @property
    def package(self) -> str:
        """The package relative imports resolve against."""
        return self.name if self.path.name == "__init__.py" else self.name.rpartition(".")[0]


def _modules() -> dict[str, Module]:
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(), str(path)))
    return modules


MODULES = _modules()


def _imported(module: Module) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(line, module imported, names imported from it)`` for every import in ``module``."""
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.package.split(".")
                parent = parent[: len(parent) - node.level + 1]
                base = ".".join([*parent, *([base] if base else [])])
            yield node.lineno, base, [alias.name for alias in node.names]


def _resolve(name: str) -> str | None:
    """Return the longest module of the package that ``name`` is or is in, else ``None``."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _edges(module: Module) -> Iterator[tuple[int, str]]:
    """Yield ``(line, tasktrace module)`` for each tasktrace module ``module`` imports."""
    for line, base, names in _imported(module):
        if not base.startswith("tasktrace"):
            continue
        targets = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES] or [base]
        for target in targets:
            resolved = _resolve(target)
            if resolved is not None and resolved != module.name:
                yield line, resolved


def _layer(name: str) -> int:
    first = name.split(".")[1] if "." in name else ""
    for number, layer in enumerate(LAYERS):
        if first in layer:
            return number
    raise AssertionError(f"module {name} is in no layer: add its package to LAYERS")


def test_every_module_is_in_a_layer() -> None:
    """Every module of the package belongs to one of the layers (a new package needs a place)."""
    assert {name: _layer(name) for name in MODULES}


def test_no_module_imports_a_higher_layer() -> None:
    """No module imports one of a higher layer: not at the top, in a function or for types."""
    upward = [
        f"{m.path.relative_to(SRC)}:{line}: {m.name} ({LAYERS[_layer(m.name)][0] or 'top'}) "
        f"imports {target} ({LAYERS[_layer(target)][0] or 'top'})"
        for m in MODULES.values()
        for line, target in _edges(m)
        if _layer(target) > _layer(m.name)
    ]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    """The modules' imports (anywhere in a module) form no cycle."""
    graph = {name: {target for _, target in _edges(m)} for name, m in MODULES.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The cycle check can fail: a two-module cycle and a longer one are found."""
    graph = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}}
    assert _cycles(graph) == [["a", "b"], ["c", "d", "e"]]


def test_no_module_is_over_400_lines() -> None:
    """No module of the package is over 400 lines."""
    sizes = {m.name: len(m.path.read_text().splitlines()) for m in MODULES.values()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(module: Module) -> set[str]:
    """Private names ``module`` defines: functions, classes, attributes it assigns, slots."""
    names: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # __slots__ entries, PrivateAttr keys, setattr names
    return {n for n in names if _is_private(n)}


def _module_aliases(module: Module) -> dict[str, bool]:
    """Names bound by imports in ``module`` → whether they are tasktrace modules."""
    aliases: dict[str, bool] = {}
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.split(".")[0]
                aliases[bound] = alias.name.startswith("tasktrace")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            for alias in node.names:
                bound = alias.asname or alias.name
                aliases[bound] = f"{base}.{alias.name}" in MODULES
    return aliases


def _private_reads(module: Module) -> Iterator[str]:
    for line, base, names in _imported(module):
        if base.startswith("tasktrace") and any(_is_private(p) for p in base.split(".")):
            yield f"{module.name}:{line}: imports private module {base}"
        if base.startswith("tasktrace"):
            for name in names:
                if _is_private(name):
                    yield f"{module.name}:{line}: imports {base}.{name}"
    aliases = _module_aliases(module)
    own = _own_names(module)
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Attribute) or not _is_private(node.attr):
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in {"self", "cls"}:
            continue
        if isinstance(value, ast.Name) and value.id in aliases:
            if aliases[value.id]:  # a tasktrace module's private name
                yield f"{module.name}:{node.lineno}: reads {value.id}.{node.attr}"
            continue  # another library's module: not tasktrace's business here
        if node.attr not in own:
            yield f"{module.name}:{node.lineno}: reads .{node.attr} of another module's object"


def test_no_module_reads_another_modules_private_names() -> None:
    """No module imports or reads a private name (``_x``) of another module (what ast sees)."""
    found = [line for m in MODULES.values() for line in _private_reads(m)]
    assert found == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from tasktrace.core.record import _x\n", "imports tasktrace.core.record._x"),
        ("from tasktrace.core import record\nrecord._x\n", "reads record._x"),
        ("def f(task):\n    return task._rt\n", "reads ._rt of another module's object"),
        ("import tasktrace._old\n", "imports private module tasktrace._old"),
    ],
)
def test_the_private_name_check_finds_each_kind(source: str, expected: str) -> None:
    """The private-name check can fail: each kind of read it knows is reported."""
    module = Module("tasktrace.core.example", SRC / "core" / "example.py", ast.parse(source))
    found = list(_private_reads(module))
    assert len(found) == 1
    assert found[0].endswith(expected)


def test_the_upward_import_check_finds_one() -> None:
    """The layer check can fail: core importing the façade, even for types only, is upward."""
    source = (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from tasktrace.task import Task\n"
    )
    module = Module("tasktrace.core.example", SRC / "core" / "example.py", ast.parse(source))
    edges = list(_edges(module))
    assert edges == [(3, "tasktrace.task")]
    assert _layer(edges[0][1]) > _layer(module.name)
