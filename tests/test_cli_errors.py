"""How every ``tasktrace`` command ends on a user's problem: one line, never a traceback.

Three kinds, each handled in one place for every command (:mod:`tasktrace.cli.boundary`):

- an input the command cannot use (a Chrome trace where a run is needed, however many files
  were given): one ``Error:`` line naming the input, exit status 2;
- an optional extra that is not installed: one line naming the command, the missing package
  and the ``pip install`` that adds it, exit status 2;
- a reader that closes standard output early (``| head -1``): the command ends quietly,
  exit status 0 (:data:`tasktrace.cli.boundary.READER_GONE_STATUS`).

Each test runs the real command in a fresh process, as from a shell.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tasktrace.cli
from tasktrace.cli.boundary import READER_GONE_STATUS

from .cli_helpers import run_cli
from .conftest import FIXTURES
from .export_helpers import clean_env

NESTED = FIXTURES / "nested.json"


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    """Return a folder with two runs (``a.json``, ``b.json``) and a Chrome trace of the first."""
    for name in ("a.json", "b.json"):
        (tmp_path / name).write_bytes(NESTED.read_bytes())
    made = run_cli(["export", "a.json", "--format", "chrome", "-o", "lk.trace.json"], tmp_path)
    assert made.returncode == 0, made.stderr
    return tmp_path


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    """Return the ``Error:`` line of a command that failed on its input; check there is one."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if not line.startswith("Warning: ")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("Error: ")
    return errors[0]


@pytest.mark.parametrize(
    "args",
    [
        ["compare", "a.json", "lk.trace.json"],  # the tester's case: a traceback, exit 1
        ["compare", "lk.trace.json", "a.json"],
        ["compare", "a.json", "lk.trace.json", "--json"],
    ],
)
def test_compare_with_a_chrome_trace_is_one_line_naming_it(runs: Path, args: list[str]) -> None:
    """A Chrome trace as one of compare's two runs is an input error naming it.

    Before: the trace was skipped (as among a glob's files), compare_runs got one run and its
    ``ValueError: compare needs at least two runs, got 1`` escaped as a traceback (exit 1).
    """
    line = _one_error_line(run_cli(args, runs))
    assert "lk.trace.json: not a tasktrace task file: a Chrome trace" in line


@pytest.mark.parametrize("command", [["report", "-o", "r.html"], ["table"]])
def test_chrome_traces_only_is_one_line_naming_them(runs: Path, command: list[str]) -> None:
    """Only Chrome traces given to report / table: one line naming each, exit 2."""
    done = run_cli(["export", "b.json", "--format", "chrome", "-o", "b.trace.json"], runs)
    assert done.returncode == 0, done.stderr
    done = run_cli([command[0], "lk.trace.json", "b.trace.json", *command[1:]], runs)
    line = _one_error_line(done)
    assert "lk.trace.json" in line
    assert "b.trace.json" in line
    assert not (runs / "r.html").exists()


def test_report_counts_the_runs_it_reported_not_the_files(runs: Path) -> None:
    """``report a b trace`` reports 2 runs and says 2 (before: "report of 3 run(s)", the files)."""
    done = run_cli(["report", "a.json", "b.json", "lk.trace.json", "-o", "r.html"], runs)
    assert done.returncode == 0, done.stderr
    assert "Warning: lk.trace.json: skipped: a Chrome trace" in done.stderr
    assert done.stderr.splitlines()[-1] == "r.html: report of 2 run(s)"


_OTLP_JSON_EXTRA = ("opentelemetry.exporter.otlp.json", "opentelemetry.proto_json")
"""The packages of the ``otlp-json`` extra, as imported (the encoder and the reader)."""


def _without(
    blocked: tuple[str, ...], args: list[str], cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``tasktrace ARGS`` in a fresh process in which the packages ``blocked`` are missing.

    Importing a package whose ``sys.modules`` entry is ``None`` raises
    :class:`ModuleNotFoundError`, as for a package that is not installed.
    """
    code = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "from tasktrace.cli import main\n"
        f"sys.exit(main({args!r}))\n"
    )
    return _python(code, cwd, **env)


def _python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c CODE`` in ``cwd`` with a clean environment plus ``env``; capture it."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(**env),
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "command"),
    [
        # the tester's case: a traceback ending in ImportError, exit 1
        (["export", "a.json", "--format", "otlp-json", "-o", "x.jsonl"], "export"),
        (["export", "a.json", "--format", "otlp-json", "-o", "-"], "export"),
        (["show", "run.jsonl"], "show"),  # reading OTLP JSON lines needs the extra too
        (["export", "run.jsonl", "--format", "task", "-o", "x.json"], "export"),
        (["compare", "run.jsonl", "a.json"], "compare"),
        (["replay", "run.jsonl", "-e", "http://127.0.0.1:9"], "replay"),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_in_every_command(
    runs: Path, args: list[str], command: str
) -> None:
    """Without ``tasktrace[otlp-json]``: one line naming the command and the extra, exit 2.

    As ``report`` without plotly says it (tests/test_reports.py). Before: export's encoder
    raised an ImportError that escaped as a traceback (exit 1); show/compare called a missing
    reader a problem of the file, and replay called it the endpoint's refusal (exit 3).
    """
    made = run_cli(["export", "a.json", "--format", "otlp-json", "-o", "run.jsonl"], runs)
    assert made.returncode == 0, made.stderr
    line = _one_error_line(_without(_OTLP_JSON_EXTRA, args, runs))
    assert line.startswith(f"Error: tasktrace {command}")
    assert line.endswith("which is not installed: pip install 'tasktrace[otlp-json]'")
    assert not (runs / "x.jsonl").exists()
    assert not (runs / "x.json").exists()


def test_an_extra_installed_but_failing_to_import_is_not_called_missing(runs: Path) -> None:
    """An extra installed but broken (plotly, a version mismatch): the import's error is shown.

    Before: "needs plotly, which is not installed", which a ``pip install`` does not fix.
    """
    code = (
        "import sys, importlib.abc\n"
        "class Broken(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'plotly.offline':\n"
        "            raise ImportError('cannot import name x from plotly.validators')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "from tasktrace.cli import main\n"
        "sys.exit(main(['report', 'a.json', '-o', 'r.html']))\n"
    )
    done = _python(code, runs)
    assert done.returncode == 2, done.stderr
    assert _one_error_line(done) == (
        "Error: tasktrace report needs plotly, which cannot be imported (ImportError: cannot "
        "import name x from plotly.validators): pip install 'tasktrace[report]'"
    )


def test_table_output_without_pyarrow_is_the_same_one_line(runs: Path) -> None:
    """``table -o x.parquet`` without pyarrow: the command's line, as without pandas.

    Before: ``Error: x.parquet: Parquet output needs pyarrow, ...`` (the output, not the
    command, as the new user saw it for pandas; tests/test_reports.py).
    """
    done = _without(("pyarrow",), ["table", "a.json", "-o", "x.parquet", "--force"], runs)
    assert _one_error_line(done) == (
        "Error: tasktrace table -o needs pyarrow, which is not installed: "
        "pip install 'tasktrace[pandas]'"
    )
    assert not (runs / "x.parquet").exists()


def test_replay_without_grpc_is_a_missing_extra_not_a_refusal(runs: Path) -> None:
    """``replay`` over gRPC without ``tasktrace[grpc]``: exit 2 and the extra, not exit 3.

    Before: ``Error: a.json: OTLP/gRPC needs ...`` with exit status 3, which the docs give to
    an endpoint that refuses the spans.
    """
    grpc = ("opentelemetry.exporter.otlp.proto.grpc",)
    done = _without(
        grpc,
        ["replay", "a.json", "-e", "http://127.0.0.1:9"],
        runs,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
    )
    line = _one_error_line(done)
    assert line.startswith("Error: tasktrace replay needs opentelemetry.exporter.otlp.proto.grpc")
    assert line.endswith("which is not installed: pip install 'tasktrace[grpc]'")


def _big_run(folder: Path) -> Path:
    """Write a task file whose views are far larger than a pipe holds (64 KiB)."""
    steps = [{"label": f"step {i}", "status": "finished", "duration": 0.5} for i in range(3000)]
    path = folder / "big.json"
    path.write_text(json.dumps({"label": "train", "status": "finished", "subtasks": steps}))
    return path


_READERS = [
    ["show", "big.json", "--all"],
    ["show", "big.json", "--json"],
    ["compare", "big.json", "other.json", "--all"],
    ["compare", "big.json", "other.json", "--json"],
    ["table", "big.json", "other.json", "--by", "label"],
    ["export", "big.json", "--format", "task", "-o", "-"],
    ["report", "big.json", "-o", "-"],
    ["config"],
    ["--help"],
    ["show", "--help"],
]


@pytest.mark.parametrize("args", _READERS)
def test_a_reader_that_stops_early_ends_the_command_quietly(
    tmp_path: Path, args: list[str]
) -> None:
    """``tasktrace ... | head -1``: the command ends quietly, exit 0, whatever it printed.

    A real pipe whose reader takes one line and closes it, as ``head -1`` does. Before: exit 1
    and nothing said (click's own handling), or "Exception ignored ... BrokenPipeError".
    """
    big = _big_run(tmp_path)
    (tmp_path / "other.json").write_bytes(big.read_bytes())
    with subprocess.Popen(
        [sys.executable, "-m", "tasktrace.cli", *args],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stdout is not None
        assert proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()  # the reader is gone: later writes get EPIPE
        stderr = proc.stderr.read().decode()
        status = proc.wait(timeout=60)
    assert first
    assert status == READER_GONE_STATUS, stderr
    assert "Traceback" not in stderr
    assert "BrokenPipeError" not in stderr
    assert "Error" not in stderr


@pytest.mark.parametrize("args", [["show", "big.json"], ["compare", "big.json", "big.json"]])
def test_head_in_a_shell_pipeline_ends_the_command_quietly(tmp_path: Path, args: list[str]) -> None:
    """``tasktrace show run.json | head -1`` in a shell: the pipeline's first status is 0."""
    _big_run(tmp_path)
    line = '"$PY" -m tasktrace.cli "$@" | head -1; echo "status ${PIPESTATUS[0]}"'
    done = subprocess.run(
        ["bash", "-c", line, "bash", *args],
        cwd=tmp_path,
        env=clean_env(PY=sys.executable),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout.splitlines()[-1] == f"status {READER_GONE_STATUS}", done.stderr
    assert done.stderr == ""


def test_every_command_prints_through_the_console_that_knows_a_closed_pipe() -> None:
    """No module of the command line builds rich's own Console (it exits 1 on a closed pipe).

    The commands print through :class:`tasktrace.cli.boundary.Console`; a new command that
    built rich's would bring back ``show | head -1`` exiting 1 with nothing said. (Rich's
    class as a type, in annotations, is fine.)
    """
    folder = Path(tasktrace.cli.__file__).parent
    offenders = [
        path.name
        for path in sorted(folder.glob("*.py"))
        if path.name != "boundary.py"
        and re.search(r"^from rich\.console import .*\bConsole\b", text := path.read_text(), re.M)
        and re.search(r"\bConsole\(", text)
    ]
    assert offenders == []


def test_run_keeps_its_commands_status_when_standard_error_is_closed(tmp_path: Path) -> None:
    """``tasktrace run ... 2>&1 | true``: the tree goes nowhere, the status is the command's.

    Before: rich's handling of the closed stream exited 1, hiding the command's 3.
    """
    with subprocess.Popen(
        [sys.executable, "-m", "tasktrace.cli", "run", "--", "sh", "-c", "sleep 0.5; exit 3"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    ) as proc:
        assert proc.stderr is not None
        proc.stderr.close()  # the reader is gone before tasktrace prints the tree
        assert proc.wait(timeout=60) == 3


def _shell(tmp_path: Path, line: str) -> subprocess.CompletedProcess[str]:
    """Run ``line`` in bash in ``tmp_path``, ``$TT`` standing for the ``tasktrace`` command."""
    return subprocess.run(
        ["bash", "-c", line],
        cwd=tmp_path,
        env=clean_env(TT=f"{sys.executable} -m tasktrace.cli"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("run -- no-such-command-here", 127),  # its "cannot start" line to a gone reader
        ("run --file gone/x.json -- sh -c 'rm -rf gone'", 125),  # its "not written" line
    ],
)
def test_run_keeps_its_status_when_standard_error_s_reader_is_gone(
    tmp_path: Path, command: str, status: int
) -> None:
    """``run``'s own error line to a standard error nobody reads no longer ends it with 0.

    Before: the line's ``BrokenPipeError`` was taken for standard output's reader gone (exit
    0): a script took a command not found, or a record not written, for success.
    """
    (tmp_path / "gone").mkdir()
    done = _shell(tmp_path, f'$TT {command} 2>&1 >/dev/null | true; echo "${{PIPESTATUS[0]}}"')
    assert done.stdout.split() == [str(status)], done.stderr


@pytest.mark.parametrize(
    ("command", "status"),
    [
        ("show run.json", 0),
        ("--version", 0),
        ("show missing.json", 2),
        ("run --file r.json -- sh -c 'touch ran; exit 3'", 3),
    ],
)
def test_a_closed_standard_output_at_start_is_no_traceback(
    runs: Path, command: str, status: int
) -> None:
    """``tasktrace ... >&-`` (standard output closed before the start): the usual status.

    Before: ``AttributeError: 'NoneType' object has no attribute 'flush'`` (``sys.stdout`` is
    ``None``) and exit 1 from every command; ``run`` did not even start its command.
    """
    (runs / "run.json").write_bytes(NESTED.read_bytes())
    done = _shell(runs, f'$TT {command} >&- 2>err; echo "$?"; tail -1 err')
    assert done.stdout.split("\n")[0] == str(status), done.stdout
    assert "Traceback" not in (runs / "err").read_text()
    if command.startswith("run"):
        assert (runs / "ran").exists()
        assert json.loads((runs / "r.json").read_text())["status"] == "failed"
