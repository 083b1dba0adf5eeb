"""OTEL_* variables parsed by tasktrace: headers, resource, sampler (export.environment)."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace import sampling

from tasktrace.core.warn import reset_warnings
from tasktrace.export import environment


def test_headers_are_percent_decoded_and_bad_items_left_out_by_position() -> None:
    """Valid items are decoded (lower-case names); invalid ones are counted by position only."""
    headers, bad, count = environment.parse_headers(
        "Authorization=Bearer%20tok, x-team = ml ,Bad Header: secret,ok=1,=novalue"
    )
    assert headers == {"authorization": "Bearer tok", "x-team": "ml", "ok": "1"}
    assert (bad, count) == ([3, 5], 5)


def test_one_bad_resource_item_discards_the_whole_variable() -> None:
    """As the specification says: a resource item without ``=`` voids the whole value."""
    assert environment.parse_resource_attributes("team=ml,region%3Deu=west") == (
        {"team": "ml", "region=eu": "west"},
        0,
        2,
    )
    assert environment.parse_resource_attributes("team=ml,oops,x=1") == (None, 2, 3)


def test_an_invalid_sampler_falls_back_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unknown sampler is parentbased_always_on; a bad ratio is 1.0; each warned once."""
    reset_warnings()
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "sometimes")
    with caplog.at_level(logging.WARNING):
        sampler = environment.traces_sampler()
        environment.traces_sampler()
    assert isinstance(sampler, sampling.ParentBased)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "2")
    with caplog.at_level(logging.WARNING):
        ratio = environment.traces_sampler()
    assert isinstance(ratio, sampling.TraceIdRatioBased)
    assert ratio.rate == 1.0
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "OTEL_TRACES_SAMPLER='sometimes'" in messages[0]
    assert "OTEL_TRACES_SAMPLER_ARG='2'" in messages[1]
