"""benchmarks/gpu_check.py without a GPU: nothing to check, the dry run, its readings and checks."""

from __future__ import annotations

import sys
import types

import pytest
from benchmarks._gpu_checks import CHECK_NAMES, evaluate, exit_status, synthetic_results
from benchmarks._gpu_readings import integrate_j, parse_smi_line
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


def test_gpu_check_dry_run_says_what_it_would_do_and_runs_the_checks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--dry-run needs no GPU: it prints the plan, the nvidia-smi command and every check."""
    assert main(["--dry-run", "--seconds", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "nvidia-smi --query-gpu=timestamp,index,power.draw.instant" in out
    assert "--loop-ms=100" in out
    assert "300 W over 4 s = 1200.0 J (expected 1200.0)" in out
    assert '"available": false' in out  # the one-device child ran here and said why not
    for name in CHECK_NAMES:
        assert f"PASS: {name}" in out


def test_power_integration_follows_the_samples_and_refuses_uncovered_windows() -> None:
    """Trapezoid over linearly interpolated samples; a window outside the samples gives None."""
    samples = [(0.0, 100.0), (1.0, 300.0), (2.0, 300.0)]
    assert integrate_j(samples, 0.0, 2.0) == pytest.approx(200.0 + 300.0)
    assert integrate_j(samples, 0.5, 1.5) == pytest.approx(125.0 + 150.0)
    assert integrate_j(samples, -0.1, 1.0) is None
    assert integrate_j(samples, 1.0, 2.5) is None


def test_nvidia_smi_lines_parse_and_non_samples_are_skipped() -> None:
    """A CSV sample line parses to (unix s, index, W); '[N/A]' and headers do not."""
    parsed = parse_smi_line("2026/11/20 10:00:00.250, 1, 85.31")
    assert parsed is not None
    assert parsed[1:] == (1, 85.31)
    assert parsed[0] % 1 == pytest.approx(0.25)
    assert parse_smi_line("2026/11/20 10:00:00.250, 0, [N/A]") is None
    assert parse_smi_line("timestamp, index, power.draw.instant [W]") is None


def test_checks_fail_on_figures_that_disagree() -> None:
    """Energy off by 20%, a wrong peak, a wrong device: FAIL each, exit status 1."""
    results, devices, wanted = synthetic_results()
    assert exit_status(evaluate(results, devices, wanted)) == 0
    results[2].smi_j = results[2].energy_j / 1.2  # type: ignore[operator]
    results[3].peak_bytes = (results[3].peak_bytes or 0) + 1
    results[5].peak_source = "torch"
    devices["devices"] = [wanted, "GPU-other"]
    checks = evaluate(results, devices, wanted)
    assert [c.passed for c in checks] == [True, False, False, False, False]
    assert exit_status(checks) == 1
    idle = next(r for r in results if r.kind == "idle")
    idle.energy_j = 10_000.0
    assert not evaluate(results, devices, wanted)[0].passed
