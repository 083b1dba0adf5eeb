"""`tasktrace run`'s default label is the program, not its arguments (stable from run to run).

Before: the label was the whole command line, so each run of ``python app.py --seed N --out
/tmp/run-N`` had a new span name (a new Jaeger/Tempo operation) and a new metric series.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from tasktrace.cli import main
from tasktrace.cli.run_label import default_label


@pytest.mark.parametrize(
    ("command", "label"),
    [
        ("python train.py --lr 3", "python train.py"),
        ("python3.12 -u -W ignore src/train.py --seed 1", "python3.12 train.py"),
        ("python -m pkg.train --lr 3", "python -m pkg.train"),
        ("python -X dev -mpkg.train", "python -m pkg.train"),
        ("python -Bc 'import secrets; print(1)'", "python -Bc"),  # inline code is not kept
        ("sh -c 'echo hi; exit 3'", "sh -c"),
        ("bash -e ./jobs/sweep.sh a b", "bash sweep.sh"),
        ("perl -pe s/a/b/ f.txt", "perl -pe"),
        ("node -r ts-node/register app.ts --port 3", "node app.ts"),
        ("./sweep.sh a b", "sweep.sh"),
        ("/usr/bin/make -j8 all", "make"),
        ("torchrun --nproc-per-node 4 train.py", "torchrun"),
        ("python", "python"),
        ("python 'my script.py' x", "python 'my script.py'"),
        ("API_KEY=abc prog", "'API_KEY=***'"),  # no program, but no secret either
        # Through wrappers, the command they run (a persona's runs under nice, env, timeout
        # and taskset all had the wrapper's name as their label):
        ("nice python echoargs.py --x 1", "python echoargs.py"),
        ("nice -n 5 python t.py", "python t.py"),
        ("env OMP_NUM_THREADS=1 python t.py", "python t.py"),
        ("env -i PATH=/bin sh -c 'echo hi'", "sh -c"),
        ("timeout 60 python t.py", "python t.py"),
        ("timeout --signal=KILL -k 5 10s ./run.sh", "run.sh"),
        ("taskset -c 0 python t.py", "python t.py"),
        ("nohup env A=1 nice ./sweep.sh a", "sweep.sh"),
        ("/usr/bin/time -f %e make -j8", "make"),
        ("stdbuf -oL python -u t.py", "python t.py"),
        ("numactl --cpunodebind=0 --membind 0 python t.py", "python t.py"),
        ("chrt -f 99 ./rt", "rt"),
        ("timeout 5", "timeout"),  # nothing wrapped: the wrapper is the program
    ],
)
def test_default_label_is_the_program(command: str, label: str) -> None:
    """The program's file name, and an interpreter's script or module; never the arguments."""
    assert default_label(shlex.split(command)) == label


def test_runs_with_other_arguments_share_one_label(tmp_path: Path) -> None:
    """Two runs differing only in arguments get one label; --record-argv keeps the line."""
    script = tmp_path / "app.py"
    script.write_text("import sys\n")
    labels, argvs = [], []
    for seed in (1, 2):
        out = tmp_path / f"run-{seed}.json"
        command = ["python3", str(script), "--seed", str(seed), "--out", f"/tmp/run-{seed}"]
        assert main(["run", "-q", "--record-argv", "-f", str(out), "--", *command]) == 0
        saved = json.loads(out.read_text())
        labels.append(saved["label"])
        argvs.append(saved["argv"])
    assert labels == ["python3 app.py", "python3 app.py"]
    assert argvs[1][-4:] == ["--seed", "2", "--out", "/tmp/run-2"]


def test_show_and_run_print_a_recorded_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The label is the program; ``--record-argv``'s line (redacted) is printed below the tree.

    By ``run`` at its end and by ``show``, so a run's arguments are seen where its figures are;
    nothing is printed for a run recorded without it.
    """
    script = tmp_path / "app.py"
    script.write_text("import sys\n")
    out = tmp_path / "run.json"
    command = ["python3", str(script), "--lr", "0.1", "--token", "s3cret"]
    assert main(["run", "--record-argv", "-f", str(out), "--", *command]) == 0
    expected = f"command: python3 {shlex.quote(str(script))} --lr 0.1 --token '***'"
    assert expected in capsys.readouterr().err.splitlines()
    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert shown[0].startswith("python3 app.py  finished")
    assert shown[1] == expected
    plain = tmp_path / "plain.json"
    assert main(["run", "-q", "-f", str(plain), "--", *command]) == 0
    assert main(["show", str(plain)]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if "command:" in line]
