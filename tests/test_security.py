"""Secrets never leave the process; task files get safe modes and a race-free temporary file."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasktrace import Task
from tasktrace.cli import main
from tasktrace.core.redact import REDACTED
from tasktrace.tree import files as _files

from .otlp_receivers import OtlpGrpcReceiver, OtlpHttpReceiver

TOKEN = "S3CRET-otlp-token-7f1d"
ENV_SECRET = "S3CRET-env-value-a93c"
ARG_SECRET = "S3CRET-argv-value-55e0"
KV_SECRET = "S3CRET-kv-value-0b2d"

WORKLOAD = r"""
import logging, os, sys
logging.basicConfig(level=logging.DEBUG)
from tasktrace import Task
from tasktrace.cli import main
out = sys.argv[1]
with Task("job", file=out + "/job.json", tags=["a"]):
    with Task("step", epoch=1):
        pass
code = main(["run", "--record-argv", "-f", out + "/run.json", "--", sys.executable, "-c", "0",
             "--token", sys.argv[2], "API_KEY=" + sys.argv[3], "-H", "Authorization: Bearer "
             + sys.argv[2], "-u", "user:" + sys.argv[2], "mysql", "-p" + sys.argv[2]])
print("run exit", code)
"""


def test_no_secret_reaches_spans_resource_files_or_logs(tmp_path: Path) -> None:
    """OTLP headers, env vars and argv secrets appear in no span, resource, file or log line."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "workload.py"
    script.write_text(WORKLOAD)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    with OtlpHttpReceiver() as receiver:
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_HEADERS=f"authorization=Bearer {TOKEN}",
            OTEL_SERVICE_NAME="security-test",
            MY_SERVICE_PASSWORD=ENV_SECRET,
            TASKTRACE_REFRESH_INTERVAL_S="0.05",
        )
        done = subprocess.run(
            [sys.executable, str(script), str(out), ARG_SECRET, KV_SECRET],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        spans = receiver.wait_for(3, timeout_s=10.0)
        headers = receiver.request_headers()
    assert any(TOKEN in str(h) for h in headers)  # the header was really in use
    assert "run exit 0" in done.stdout
    assert "DEBUG" in done.stderr  # debug logging was on
    texts = {
        "spans": repr([(s.name, s.attributes, s.events, s.status_message) for s in spans]),
        "resource": repr([s.resource_attributes for s in spans]),
        "stdout": done.stdout,
        "stderr": done.stderr,
    }
    texts.update({p.name: p.read_text() for p in out.iterdir()})
    assert set(texts) >= {"job.json", "run.json"}
    for where, text in texts.items():
        for secret in (TOKEN, ENV_SECRET, ARG_SECRET, KV_SECRET):
            assert secret not in text, f"{secret} leaked into {where}"
    run = json.loads((out / "run.json").read_text())
    assert run["argv"][-9:] == [
        *("--token", REDACTED, f"API_KEY={REDACTED}", "-H", f"Authorization: {REDACTED}"),
        *("-u", f"user:{REDACTED}", "mysql", f"-p{REDACTED}"),
    ]


def test_run_records_argv_only_when_asked(tmp_path: Path) -> None:
    """`tasktrace run` keeps no argv by default, and its default label is the program alone."""
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "--", "true", f"--password={ARG_SECRET}"]) == 0
    saved = json.loads(out.read_text())
    assert "argv" not in saved
    assert saved["label"] == "true"
    assert ARG_SECRET not in out.read_text()


def test_run_hides_header_userinfo_and_short_option_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A persona's curl/mysql command keeps no secret in the label, argv, file or ``show``.

    Before: the Authorization header, ``-u user:pw``, ``--pass``, ``--key``, ``--access-key``,
    ``--wandb-key=`` and mysql's ``-pPW`` values were all in the label and ``show``'s tree.
    """
    out = tmp_path / "red.json"
    secrets = [f"{ARG_SECRET}-{n}" for n in range(7)]
    command = [
        *("true", "curl", "-H", f"Authorization: Bearer {secrets[0]}", "-u", f"user:{secrets[1]}"),
        *("--pass", secrets[2], "--key", secrets[3], "--access-key", secrets[4]),
        *(f"--wandb-key={secrets[5]}", "mysql", f"-p{secrets[6]}"),
    ]
    assert main(["run", "-q", "--record-argv", "-f", str(out), "--", *command]) == 0
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr()
    saved = json.loads(out.read_text())
    assert saved["label"] == "true"  # the program: the arguments are argv's
    assert saved["argv"][:4] == ["true", "curl", "-H", "Authorization: ***"]
    assert shown.out  # show printed the tree, label included
    for where, text in {"file": out.read_text(), "show": shown.out + shown.err}.items():
        assert [s for s in secrets if s in text] == [], f"leaked into {where}"


def test_a_command_that_cannot_start_is_named_redacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``cannot start`` names the program as the label does: a secret in it is hidden.

    Before: ``tasktrace run -- API_KEY=... prog`` (a shell's syntax, not run's) put the key in
    the error line and the task file's ``error``.
    """
    out = tmp_path / "run.json"
    assert main(["run", "-q", "-f", str(out), "--", f"API_KEY={ARG_SECRET}", "prog"]) == 127
    error = capsys.readouterr().err
    assert f"cannot start 'API_KEY={REDACTED}'" in error
    assert ARG_SECRET not in error + out.read_text()


def test_run_label_hides_a_secret_in_a_url_query(tmp_path: Path) -> None:
    """A link's ``?token=`` in the command never reaches the label or the argv.

    Before: ``tasktrace run -- curl 'https://h/x?token=...'`` kept the token in both.
    """
    out = tmp_path / "run.json"
    url = f"https://data.example.org/x?token={ARG_SECRET}&page=2"
    assert main(["run", "-q", "--record-argv", "-f", str(out), "--", "true", url]) == 0
    saved = json.loads(out.read_text())
    assert saved["argv"][-1] == f"https://data.example.org/x?token={REDACTED}&page=2"
    assert ARG_SECRET not in out.read_text()


@pytest.fixture
def umask_of() -> Iterator[object]:
    """Run with a given umask (tasktrace reads it once per process: forget it around the test)."""
    old = os.umask(0o022)
    os.umask(old)

    def set_umask(mask: int) -> None:
        os.umask(mask)
        _files._umask = None

    yield set_umask
    os.umask(old)
    _files._umask = None


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o000, 0o664)])
def test_task_file_mode_follows_umask_never_world_writable(
    tmp_path: Path, umask_of: object, mask: int, mode: int
) -> None:
    """Task files get 0o666 less the umask, and never world-write even with umask 0."""
    umask_of(mask)  # type: ignore[operator]
    path = tmp_path / "t.json"
    with Task("x", file=path):
        assert stat.S_IMODE(path.stat().st_mode) == mode
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_atomic_write_never_follows_planted_symlinks(tmp_path: Path) -> None:
    """Symlinks planted at the task file or at predictable temp names are never written through."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "t.json"
    for name in ("t.json", ".t.json.tmp", "t.json.tmp", ".t.json.swp"):
        (tmp_path / name).symlink_to(victim)
    with Task("x", file=path):
        pass
    assert victim.read_text() == "precious"
    assert not path.is_symlink()
    assert Task.model_validate_json(path.read_text()).label == "x"


# ----- secrets in the OTEL_* variables never reach stderr or a log ------------------------------

HEADER_SECRET = "tok-123-S3CRET"
RESOURCE_SECRET = "abc123-S3CRET"
MALFORMED = {
    # a colon where "=" belongs: the SDK used to print the whole item, token and all
    "OTEL_EXPORTER_OTLP_HEADERS": f"Authorization: Bearer {HEADER_SECRET},x-team=ml%2Fnlp%20lab",
    "OTEL_RESOURCE_ATTRIBUTES": f"team=ml,api_key {RESOURCE_SECRET}",
}
DEBUG_WORKLOAD = """
import logging, sys
logging.basicConfig(level=logging.DEBUG)
from tasktrace import Task
with Task("job", file=sys.argv[1]):
    pass
"""


def _run_python(
    code: str, env: dict[str, str], *args: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("TASKTRACE_", "OTEL_"))}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def _tasktrace_lines(stderr: str) -> list[str]:
    """Return the tasktrace warnings in ``stderr`` (debug lines left out)."""
    return [
        line
        for line in stderr.splitlines()
        if "tasktrace: " in line and not line.startswith(("DEBUG:", "INFO:"))
    ]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_malformed_header_and_resource_variables_are_never_echoed(
    protocol: str, tmp_path: Path
) -> None:
    """Bad items of the header and resource variables: one tasktrace line each, no value shown.

    The whole stderr of a real run (debug logging on) never holds the secrets; the valid
    header, percent-decoded, reaches a real OTLP receiver and the malformed one does not; the
    resource variable is ignored whole, as the OTel specification says.
    """
    receiver_class = OtlpGrpcReceiver if protocol == "grpc" else OtlpHttpReceiver
    with receiver_class() as receiver:
        env = {
            **MALFORMED,
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        }
        done = _run_python(DEBUG_WORKLOAD, env, str(tmp_path / "job.json"))
        spans = receiver.wait_for(1, timeout_s=10)
        headers = receiver.request_headers()
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr  # the SDK's and urllib3's debug records were all shown
    for secret in (HEADER_SECRET, RESOURCE_SECRET, "Bearer"):
        assert secret not in done.stderr
    ours = _tasktrace_lines(done.stderr)
    assert len([x for x in ours if "invalid OTEL_EXPORTER_OTLP_HEADERS" in x]) == 1, ours
    assert len([x for x in ours if "invalid OTEL_RESOURCE_ATTRIBUTES" in x]) == 1, ours
    assert "Header format invalid" not in done.stderr  # the SDK never parsed it in our build
    assert headers[0]["x-team"] == "ml/nlp lab"
    assert all("authorization" not in h for h in headers)
    assert "team" not in spans[0].resource_attributes


def test_per_signal_headers_win_and_are_percent_decoded(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_TRACES_HEADERS replaces the generic variable; values are decoded."""
    with OtlpHttpReceiver(require_headers={"authorization": "Bearer good one"}) as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20bad,x-generic=1",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "Authorization=Bearer%20good%20one",
        }
        done = _run_python(DEBUG_WORKLOAD, env, str(tmp_path / "job.json"))
        receiver.wait_for(1, timeout_s=10)  # stored only with the right header (else 401)
        headers = receiver.request_headers()
    assert done.returncode == 0, done.stderr
    assert _tasktrace_lines(done.stderr) == []
    assert "x-generic" not in headers[0]


METRICS_WORKLOAD = """
import logging
logging.basicConfig(level=logging.DEBUG)
from tasktrace import Task
with Task("job"):
    pass
"""


def test_metric_exporter_gets_parsed_headers_and_echoes_nothing(
    otlp_http_receiver: OtlpHttpReceiver,
) -> None:
    """The metrics exporter: per-signal headers parsed by tasktrace; a bad item never echoed."""
    env = {
        "TASKTRACE_METRICS": "true",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"{otlp_http_receiver.endpoint}/v1/metrics",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": f"Authorization: Bearer {HEADER_SECRET},x-m=1%2B1",
    }
    done = _run_python(METRICS_WORKLOAD, env)
    assert done.returncode == 0, done.stderr
    assert HEADER_SECRET not in done.stderr
    ours = _tasktrace_lines(done.stderr)
    assert [x for x in ours if "invalid OTEL_EXPORTER_OTLP_METRICS_HEADERS" in x], ours
    assert otlp_http_receiver.metrics_requests()  # flushed by the meter provider at exit
    assert otlp_http_receiver.request_headers()[0]["x-m"] == "1+1"


def test_replay_gets_parsed_headers_and_echoes_nothing(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """`tasktrace replay` with a malformed headers variable: sent, the secret never shown."""
    path = tmp_path / "job.json"
    with Task("job", file=path):
        pass
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_receiver.endpoint,
        **MALFORMED,
    }
    code = (
        "import logging, sys\nlogging.basicConfig(level=logging.DEBUG)\n"
        "from tasktrace.cli import main\nsys.exit(main(['replay', sys.argv[1]]))\n"
    )
    done = _run_python(code, env, str(path))
    assert done.returncode == 0, done.stderr
    for secret in (HEADER_SECRET, RESOURCE_SECRET):
        assert secret not in done.stderr
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=10)
    assert span.name == "job"
    assert otlp_http_receiver.request_headers()[0]["x-team"] == "ml/nlp lab"


def test_sdk_resource_parser_elsewhere_shows_no_item() -> None:
    """Resource.create run by other code (the user's, a library's): the bad item is not shown."""
    code = (
        "import logging\nlogging.basicConfig()\nimport tasktrace\n"
        "from opentelemetry.sdk.resources import Resource\n"
        "print(Resource.create({}).attributes.get('team'))\n"
    )
    done = _run_python(code, {"OTEL_RESOURCE_ATTRIBUTES": MALFORMED["OTEL_RESOURCE_ATTRIBUTES"]})
    assert done.returncode == 0, done.stderr
    assert RESOURCE_SECRET not in done.stderr
    assert "Invalid key value resource attribute pair <not shown" in done.stderr


def test_grpc_exporter_never_falls_back_to_the_raw_headers_variable(
    otlp_grpc_receiver: OtlpGrpcReceiver, tmp_path: Path
) -> None:
    """Every header item invalid: gRPC gets no metadata, not the raw variable parsed by the SDK.

    The SDK's gRPC exporter parses the variable itself when ``headers`` is empty
    (``headers or environ.get(...)``); its parser would accept this item and send a value with
    a line break, which gRPC refuses, losing the spans.
    """
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_grpc_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-token=a%0A{HEADER_SECRET}",
    }
    done = _run_python(DEBUG_WORKLOAD, env, str(tmp_path / "job.json"))
    assert done.returncode == 0, done.stderr
    assert HEADER_SECRET not in done.stderr
    (warning,) = _tasktrace_lines(done.stderr)
    assert "invalid OTEL_EXPORTER_OTLP_HEADERS: item 1 of 1" in warning
    (span,) = otlp_grpc_receiver.wait_for(1, timeout_s=10)
    assert span.name == "job"
    assert "x-token" not in otlp_grpc_receiver.request_headers()[0]


def test_http_export_failure_caused_by_a_header_never_quotes_it(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """A header value no request can carry fails the export; the warning shows no part of it.

    tasktrace leaves the item (a line break once decoded) out; the OTLP/HTTP exporter's own
    parser still adds it, and the HTTP library refuses the request quoting the value.
    """
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_http_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_HEADERS": f"x-token=a%0A{HEADER_SECRET}",
    }
    done = _run_python(DEBUG_WORKLOAD, env, str(tmp_path / "job.json"))
    assert done.returncode == 0, done.stderr
    assert HEADER_SECRET not in done.stderr
    ours = _tasktrace_lines(done.stderr)
    assert "invalid OTEL_EXPORTER_OTLP_HEADERS: item 1 of 1" in ours[0]
    assert "span export to" in ours[1]
    assert "***" in ours[1]
