"""One table of every setting, the export ones included, each with its source (export.effective)."""

from __future__ import annotations

import ast
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import opentelemetry.environment_variables as api_variables
import opentelemetry.sdk.environment_variables as sdk_variables
import pytest

from tasktrace.cli import main
from tasktrace.core.settings import Settings
from tasktrace.core.settings_layers import leaf_paths
from tasktrace.core.warn import reset_warnings
from tasktrace.export.effective import EXPORT_KEYS, SCRIPT_NAME_SOURCE, export_values

from ..export_helpers import clean_env, run_script
from ..otlp_receivers import OtlpHttpReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_otel_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts without OTEL_* variables (they set their own)."""
    for key in list(os.environ):
        if key.startswith("OTEL_"):
            monkeypatch.delenv(key)


def _config_rows(capsys: pytest.CaptureFixture[str]) -> dict[str, dict[str, Any]]:
    assert main(["config", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return {row["key"]: row for row in report["settings"]}


def _value_and_source(rows: dict[str, dict[str, Any]], key: str) -> tuple[Any, str]:
    return rows[key]["value"], rows[key]["source"]


def test_config_shows_each_export_value_with_its_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The config command: exporters, endpoints, protocol, headers, timeouts, sampler, by source."""
    for name, value in {
        "OTEL_TRACES_EXPORTER": "console,OTLP",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/custom",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "x-team=ml",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "7",
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.5",
        "OTEL_SERVICE_NAME": "recsys",
        "OTEL_RESOURCE_ATTRIBUTES": "team=ml",
        "TASKTRACE_EXIT_TIMEOUT_S": "2",
    }.items():
        monkeypatch.setenv(name, value)
    rows = _config_rows(capsys)
    assert _value_and_source(rows, "export.traces.exporters") == (
        ["console", "otlp"],
        "OTEL_TRACES_EXPORTER",
    )
    assert _value_and_source(rows, "export.traces.endpoint") == (
        "http://127.0.0.1:9/custom",  # the per-signal variable is used as is
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    )
    assert _value_and_source(rows, "export.traces.protocol") == (
        "grpc",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    )
    assert _value_and_source(rows, "export.metrics.endpoint") == (
        "http://localhost:4317",
        "default",
    )
    assert _value_and_source(rows, "export.metrics.timeout_s") == (
        7.0,
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
    )
    assert _value_and_source(rows, "export.traces.timeout_s") == (10.0, "default")
    assert _value_and_source(rows, "export.metrics.headers.x-team") == (
        "***",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    )
    assert not any(key.startswith("export.traces.headers.") for key in rows)
    assert rows["export.traces.sampler"]["value"].startswith("ParentBased{root:TraceIdRatioBased")
    assert rows["export.traces.sampler"]["source"] == "OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG"
    assert _value_and_source(rows, "export.service_name") == ("recsys", "OTEL_SERVICE_NAME")
    assert _value_and_source(rows, "export.resource_attributes.team") == (
        "***",
        "OTEL_RESOURCE_ATTRIBUTES",
    )
    assert _value_and_source(rows, "exit_timeout_s") == (2.0, "TASKTRACE_EXIT_TIMEOUT_S")
    assert _value_and_source(rows, "export.sdk_disabled") == (False, "default")


def test_config_with_nothing_set_shows_the_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    """No variable: no span exporter, http/protobuf to localhost:4318, the script's name."""
    rows = _config_rows(capsys)
    assert _value_and_source(rows, "export.traces.exporters") == ([], "default")
    assert _value_and_source(rows, "export.traces.endpoint") == (
        "http://localhost:4318/v1/traces",
        "default",
    )
    assert _value_and_source(rows, "export.metrics.exporters") == (["otlp"], "default")
    assert _value_and_source(rows, "export.service_name") == (None, SCRIPT_NAME_SOURCE)
    assert rows["export.traces.sampler"]["value"].startswith("ParentBased{root:AlwaysOnSampler")


def test_sdk_disabled_and_invalid_variables_show_what_the_exporters_would_use(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """OTEL_SDK_DISABLED=true: no exporter; a bad timeout: the default, with the one warning."""
    reset_warnings()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")
    with caplog.at_level(logging.WARNING):
        rows = _config_rows(capsys)
    assert _value_and_source(rows, "export.traces.exporters") == ([], "OTEL_SDK_DISABLED")
    assert _value_and_source(rows, "export.sdk_disabled") == (True, "OTEL_SDK_DISABLED")
    assert _value_and_source(rows, "export.traces.timeout_s") == (10.0, "default")
    warnings = [
        r.getMessage() for r in caplog.records if "OTEL_EXPORTER_OTLP_TIMEOUT" in r.getMessage()
    ]
    assert len(warnings) == 1


def test_the_table_in_a_program_is_what_its_exporter_sends(
    otlp_http_receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    """configure() over OTEL_*: the rows' sources, and the receiver gets what the rows say."""
    code = """
    import json, tasktrace
    from tasktrace.export.effective import effective_values
    tasktrace.configure(
        service_name="from-code", headers={"x-extra": "e-1"}, timeout_s=3, exit_timeout_s=4
    )
    with tasktrace.Task("configured"):
        pass
    print(json.dumps({row.key: [row.value, row.source] for row in effective_values()}))
    """
    env = clean_env(
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_http_receiver.endpoint,
        OTEL_EXPORTER_OTLP_TRACES_HEADERS="x-token=t%201",
        OTEL_SERVICE_NAME="from-env",
        OTEL_RESOURCE_ATTRIBUTES="team=ml",
    )
    run = run_script(code, tmp_path, env)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout.splitlines()[-1])
    assert rows["export.traces.exporters"] == [["otlp"], "OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert rows["export.traces.endpoint"] == [
        f"{otlp_http_receiver.endpoint}/v1/traces",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    assert rows["export.traces.headers.x-token"] == ["***", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"]
    assert rows["export.traces.headers.x-extra"] == ["***", "configure(headers=...)"]
    assert rows["export.traces.timeout_s"] == [3, "configure(timeout_s=...)"]
    assert rows["export.service_name"] == ["from-code", "configure(service_name=...)"]
    assert rows["exit_timeout_s"] == [4, "configure(exit_timeout_s=...)"]
    assert rows["export.resource_attributes.team"] == ["***", "OTEL_RESOURCE_ATTRIBUTES"]
    (span,) = otlp_http_receiver.wait_for(1, timeout_s=5.0)
    assert span.resource_attributes["service.name"] == "from-code"
    assert span.resource_attributes["team"] == "ml"
    headers = otlp_http_receiver.request_headers()[0]
    assert (headers["x-token"], headers["x-extra"]) == ("t 1", "e-1")
    assert "t 1" not in run.stdout
    assert "e-1" not in run.stdout


def test_config_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """URL passwords and queries, header and resource values never appear in tasktrace config."""
    monkeypatch.setenv("LK_PROMETHEUS__URL", "http://alice:hunter2@prom.lab:9090/?token=s3cr3t")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20tok-9f8e,x-team=ml")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "https://bob:pa55@collector:4318")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deploy.key=k-77x1")
    monkeypatch.setenv("COLUMNS", "200")
    for argv in (["config"], ["config", "--json"]):
        assert main(argv) == 0
        out = capsys.readouterr().out
        for secret in ("hunter2", "s3cr3t", "tok-9f8e", "Bearer", "pa55", "k-77x1"):
            assert secret not in out, (argv, secret)
        assert "alice:***@prom.lab:9090" in out
        assert "bob:***@collector:4318/v1/traces" in out
    rows = _config_rows(capsys)
    assert rows["export.traces.headers.authorization"]["value"] == "***"
    assert rows["export.resource_attributes.deploy.key"]["value"] == "***"


def _documented_rows() -> dict[str, str]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    section = text[text.index("## Settings\n") :]
    section = section[: section.index("\n## ")]
    return {line.split("`")[1]: line for line in section.splitlines() if line.startswith("| `")}


def test_every_key_is_in_the_one_table_of_the_docs() -> None:
    """docs/configuration.md's table: one row per Settings key and per export key, no more."""
    settings = Settings.model_validate({"machines": {"NAME": {"power_queries": {"system": "q"}}}})
    keys = [".".join(path) for path in leaf_paths(settings.model_dump())]
    assert sorted(_documented_rows()) == sorted([*keys, *EXPORT_KEYS])


def _pattern(key: str) -> str:
    for prefix in ("export.traces.headers.", "export.metrics.headers."):
        if key.startswith(prefix):
            return prefix + "NAME"
    if key.startswith("export.resource_attributes."):
        return "export.resource_attributes.KEY"
    return key


def test_the_docs_name_every_variable_an_export_value_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each variable that can give an export value is named in that key's row of the table."""
    sources: dict[str, set[str]] = {}
    for environment in (
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "console",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://m:4318",
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_METRICS_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "1",
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT": "1",
            "OTEL_TRACES_SAMPLER": "traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.5",
            "OTEL_SERVICE_NAME": "s",
            "OTEL_RESOURCE_ATTRIBUTES": "k=v",
            "OTEL_SDK_DISABLED": "false",
        },
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://g:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_EXPORTER_OTLP_HEADERS": "a=1",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=s",
        },
        {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318"},
        {"OTEL_SDK_DISABLED": "true"},
    ):
        with monkeypatch.context() as patch:
            for name, value in environment.items():
                patch.setenv(name, value)
            for row in export_values():
                names = set(re.findall(r"OTEL_[A-Z_]+", row.source))
                sources.setdefault(_pattern(row.key), set()).update(names)
    documented = _documented_rows()
    missing = {
        key: sorted(name for name in names if name not in documented[key])
        for key, names in sources.items()
    }
    assert {key: names for key, names in missing.items() if names} == {}
    assert set(sources) == set(EXPORT_KEYS)


def _code_strings(tree: ast.Module) -> list[ast.Constant]:
    """Return the string constants of a module that are not docstrings."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for index, statement in enumerate(body):
            is_string = isinstance(statement, ast.Expr) and isinstance(
                statement.value, ast.Constant
            )
            after_assignment = index > 0 and isinstance(body[index - 1], ast.Assign | ast.AnnAssign)
            if is_string and (index == 0 or after_assignment):
                docstrings.add(id(statement.value))
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_otel_variable_names_in_the_code_come_from_opentelemetry() -> None:
    """No string in src/ spells a variable name that opentelemetry's modules define."""
    defined = {n for m in (sdk_variables, api_variables) for n in dir(m) if n.startswith("OTEL_")}
    copies = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
        for path in sorted((ROOT / "src" / "tasktrace").rglob("*.py"))
        for node in _code_strings(ast.parse(path.read_text()))
        for name in re.findall(r"OTEL_[A-Z_]+", node.value)
        if name in defined
    ]
    assert copies == []
