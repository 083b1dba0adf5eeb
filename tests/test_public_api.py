"""The public surface: a complete, sorted ``__all__``, docstrings, no torch import."""

from __future__ import annotations

import subprocess
import sys
import types

import tasktrace


def test_all_is_sorted_and_complete() -> None:
    """``__all__`` is sorted and names every public attribute of the package."""
    assert list(tasktrace.__all__) == sorted(tasktrace.__all__)
    public = {
        n
        for n, v in vars(tasktrace).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)  # submodules
    } - {"annotations"}
    assert public <= set(tasktrace.__all__)
    for name in tasktrace.__all__:
        assert hasattr(tasktrace, name), name


def test_public_objects_have_docstrings() -> None:
    """Every public class and method has a docstring."""
    for name in tasktrace.__all__:
        obj = getattr(tasktrace, name)
        if isinstance(obj, str):
            continue
        assert obj.__doc__, name
        for attr_name, member in vars(obj).items():
            if attr_name.startswith("_") or not callable(member):
                continue
            assert member.__doc__, f"{name}.{attr_name}"


def test_importing_and_running_a_task_never_imports_torch() -> None:
    """``import tasktrace`` and a task with a file never import torch (even if installed)."""
    code = (
        "import sys, tempfile, os\n"
        "import tasktrace\n"
        "d = tempfile.mkdtemp()\n"
        "with tasktrace.Task('x', file=os.path.join(d, 't.json')):\n"
        "    pass\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_import_and_cli_start_never_import_pandas_or_plotly() -> None:
    """``import tasktrace`` and the CLI's start import neither pandas nor plotly (extras)."""
    code = (
        "import sys\n"
        "import tasktrace, tasktrace.cli\n"
        "print(sorted(m for m in ('pandas', 'plotly', 'pyarrow') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_read_tasks_and_report_are_loaded_on_first_use() -> None:
    """``tasktrace.read_tasks`` / ``tasktrace.report`` import their extras only when used."""
    code = (
        "import sys, tasktrace\n"
        "tasktrace.report\n"
        "print('plotly' in sys.modules, 'pandas' in sys.modules)\n"
        "tasktrace.read_tasks\n"
        "print('pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["True", "False", "True"]


def test_every_name_in_all_of_the_testing_module_exists_without_pytest() -> None:
    """``from tasktrace.testing import *`` works where pytest is not installed.

    Seen failing before the fix (docs persona, the demo's environment has no pytest):
    ``AttributeError: module 'tasktrace.testing' has no attribute 'task_spans'``, which
    ``__all__`` named whether or not pytest was there to define it.
    """
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None  # as if pytest were not installed\n"
        "from tasktrace.testing import *\n"
        "import tasktrace.testing as t\n"
        "assert all(hasattr(t, name) for name in t.__all__), t.__all__\n"
        "print(sorted(t.__all__))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "capture_spans" in out
    assert "task_spans" not in out


def test_the_testing_module_offers_its_fixture_where_pytest_is_installed() -> None:
    """With pytest importable (this test run), ``task_spans`` is defined and in ``__all__``."""
    from tasktrace import testing

    assert "task_spans" in testing.__all__
    assert callable(testing.task_spans)
