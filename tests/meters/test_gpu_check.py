"""benchmarks/gpu_check.py where there is nothing to check."""

from __future__ import annotations

import sys
import types

import pytest
from benchmarks.gpu_check import main


def test_gpu_check_without_torch_exits_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without torch the check says so and exits 0."""
    monkeypatch.setitem(sys.modules, "torch", None)
    assert main([]) == 0
    assert "torch is not installed" in capsys.readouterr().out


def test_gpu_check_without_a_gpu_exits_cleanly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With torch but no CUDA device the check says so, exits 0 and starts no task."""
    cuda = types.SimpleNamespace(is_available=lambda: False)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert main([]) == 0
    assert "no CUDA GPU" in capsys.readouterr().out
