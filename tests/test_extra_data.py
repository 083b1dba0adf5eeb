"""A task's extra data: NumPy, scikit-learn and pandas results, NaN and infinities, bad values.

What an ML program logs (``t.cv = cross_validate(...)``) is kept in its JSON form in the task,
its file and its span, however deep the NumPy values sit; what cannot be kept is refused with
a message that says what, where, and what to do.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

import tasktrace
from tasktrace import Task, TaskStatus
from tasktrace.core import attributes as attr
from tasktrace.testing import InMemorySpanExporter

from .cli_helpers import run_cli

np = pytest.importorskip("numpy", reason="numpy comes with the examples extra (scikit-learn)")


def _saved(path: Path, label: str) -> dict[str, Any]:
    """Return the task ``label`` (the root or one of its children) as the file holds it."""
    root = json.loads(path.read_text())
    return (
        root if root["label"] == label else next(c for c in root["subtasks"] if c["label"] == label)
    )


def test_scikit_learn_results_are_stored_as_lists_in_the_task_file_and_span(
    tmp_path: Path, task_spans: InMemorySpanExporter
) -> None:
    """A cross_validate dict, cv_results_ (masked object arrays) and np.unique counts are kept.

    Each was a TypeError that failed the task: NumPy arrays and scalars inside a dict, as
    values and as keys (a key becomes a string, as JSON's keys are and pydantic writes an int).
    """
    datasets = pytest.importorskip("sklearn.datasets", reason="needs scikit-learn (examples)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, cross_validate

    x, y = datasets.load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=300)
    cv = cross_validate(model, x, y, cv=3)
    search = GridSearchCV(model, {"C": [0.1, 1.0]}, cv=3).fit(x, y)
    path = tmp_path / "cv.json"
    with Task("cv", file=path) as t:
        t.cv = cv
        t.cv_results = search.cv_results_
        t.counts = dict(zip(*np.unique(y, return_counts=True), strict=True))
        t.v = [np.int64(1)]
    assert t.status.value == "finished"
    saved = _saved(path, "cv")
    assert saved["cv"] == {key: value.tolist() for key, value in cv.items()}
    assert saved["cv_results"]["param_C"] == [0.1, 1.0]  # a masked array of objects
    assert saved["cv_results"]["params"] == [{"C": 0.1}, {"C": 1.0}]
    assert saved["cv_results"]["rank_test_score"] == search.cv_results_["rank_test_score"].tolist()
    assert saved["counts"] == {"0": 50, "1": 50, "2": 50}
    assert saved["v"] == [1]
    loaded = Task.model_validate_json(path.read_bytes())
    assert {k: loaded.model_extra[k] for k in ("cv", "counts", "v")} == {  # type: ignore[index]
        k: saved[k] for k in ("cv", "counts", "v")
    }
    assert (t.cv, t.counts, t.v) == (saved["cv"], saved["counts"], saved["v"])  # in memory too
    (span,) = task_spans.get_finished_spans()
    fields = attr.attributes_to_fields(span.attributes or {})
    assert (fields["cv"], fields["counts"], fields["v"]) == (saved["cv"], saved["counts"], [1])


def test_numpy_values_anywhere_are_converted_as_given_to_the_constructor_or_assigned() -> None:
    """Lists, tuples, sets and dicts holding NumPy scalars, 0-d, masked and 2-D arrays."""
    given = {
        "scalars": [np.int64(1), np.float32(0.5), np.bool_(True), np.float16(0.25)],
        "zero_d": np.array(3.5),
        "masked": np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]),
        "matrix": np.eye(2, dtype=np.int32),
        "nested": ({"a": (np.int8(1), {np.int16(2)})}, [np.arange(3)]),
        "keys": {np.int64(7): np.float64(0.5), np.str_("s"): np.uint8(3)},
    }
    expected = {
        "scalars": [1, 0.5, True, 0.25],
        "zero_d": 3.5,
        "masked": [1, None, 3],
        "matrix": [[1, 0], [0, 1]],
        "nested": [{"a": [1, [2]]}, [[0, 1, 2]]],
        "keys": {"7": 0.5, "s": 3},
    }
    built = Task("built", **given)
    assigned = Task("assigned")
    for key, value in given.items():
        setattr(assigned, key, value)
    for task in (built, assigned):
        dumped = json.loads(task.model_dump_json())
        assert {k: dumped[k] for k in expected} == expected
        assert type(task.model_extra["scalars"][0]) is int  # type: ignore[index]  # not np.int64


def test_pandas_values_keep_their_labels_unless_the_index_is_the_default() -> None:
    """A Series is a list with the default index, else a dict; a DataFrame one per column."""
    pd = pytest.importorskip("pandas", reason="pandas comes with the pandas extra")
    frame = pd.DataFrame({"loss": [0.5, 0.25], "fold": [0, 1]})
    with Task("pandas") as t:
        t.losses = frame["loss"]
        t.means = frame.mean()
        t.frame = frame
        t.summary = frame.describe().loc[["mean", "max"]]
        t.in_dict = {"by_fold": pd.Series([0.5, 0.25], index=[1, 2])}
    assert t.losses == [0.5, 0.25]
    assert t.means == {"loss": 0.375, "fold": 0.5}
    assert t.frame == {"loss": [0.5, 0.25], "fold": [0, 1]}
    assert t.summary == {"loss": {"mean": 0.375, "max": 0.5}, "fold": {"mean": 0.5, "max": 1.0}}
    assert t.in_dict == {"by_fold": {"1": 0.5, "2": 0.25}}
    assert pd.DataFrame(t.frame).equals(frame)  # rebuilt from what was stored


def test_pandas_gaps_are_stored_as_null() -> None:
    """The gaps of pandas (``pd.NA``, ``NaT``, NaN) are ``None``, in a Series, a DataFrame or alone.

    ``read_csv(...).convert_dtypes()`` with an empty cell: before, the assignment raised.
    """
    pd = pytest.importorskip("pandas", reason="pandas comes with the pandas extra")
    frame = pd.DataFrame(
        {"id": [1, 2], "score": [0.5, None], "when": pd.to_datetime(["2024-01-01", None])}
    ).convert_dtypes()
    with Task("gaps") as t:
        t.ids = pd.Series([1, None], dtype="Int64")
        t.frame = frame
        t.alone = {"na": pd.NA, "nat": pd.NaT}
    assert t.status is TaskStatus.FINISHED
    assert t.ids == [1, None]
    assert t.frame == {"id": [1, 2], "score": [0.5, None], "when": ["2024-01-01T00:00:00", None]}
    assert t.alone == {"na": None, "nat": None}


def test_what_cannot_be_stored_is_named_with_where_it_is_and_what_to_do() -> None:
    """The TypeError names the key, the inner item's type, its place and what to store."""
    pipeline = pytest.importorskip("sklearn.pipeline", reason="needs scikit-learn (examples)")
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    params = pipeline.make_pipeline(StandardScaler(), LogisticRegression()).get_params()
    with Task("t") as t:
        with pytest.raises(TypeError) as raised:
            t.params = params
        message = str(raised.value)
        assert message.startswith("task data 'params' cannot be stored: ")
        assert "sklearn.preprocessing._data.StandardScaler at params['steps'][0][1]" in message
        assert "str(value)" in message  # what to do
        with pytest.raises(TypeError, match=r"object at cv\['estimator'\]\[1\] has no JSON form"):
            t.cv = {"test_score": np.ones(2), "estimator": np.array([None, object()])}
        with pytest.raises(TypeError, match=r"object at a key of counts has no JSON form"):
            t.counts = {"a": 1, object(): 2}
        with pytest.raises(TypeError, match=r"generator at rows\[1\] is an iterator.*list\("):
            t.rows = [1, (i for i in range(3))]
        t.ok = 1  # the task goes on
    assert t.status.value == "finished"
    assert "params" not in t.model_extra  # type: ignore[operator]


class _LensKitLike(BaseModel):
    """A reader as LensKit's ``Task`` is: a pydantic model, extra data allowed, defaults."""

    model_config = ConfigDict(extra="allow")
    label: str
    duration: float | None = None
    cpu_time: float | None = None


def test_nan_and_infinities_round_trip_file_task_and_show(
    tmp_path: Path, task_spans: InMemorySpanExporter
) -> None:
    """A diverged loss is "NaN" in the file (not null, "not measured"), the span and show.

    Read back, fields are floats again (tasktrace's reader and a LensKit-like one), and so is
    tasktrace's extra data (a LensKit-like reader, untyped, holds the strings); ``read_tasks``
    gives a numeric column.
    """
    path = tmp_path / "nan.json"
    with Task("diverged", file=path) as t:
        t.loss = float("nan")
        t.losses = np.array([0.5, np.nan, np.inf, -np.inf])
        t.nested = {"best": float("-inf")}
    assert math.isnan(t.loss)  # the value in memory is unchanged
    saved = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c}: not JSON"))
    assert saved["loss"] == "NaN"
    assert saved["losses"] == [0.5, "NaN", "Infinity", "-Infinity"]
    assert saved["nested"] == {"best": "-Infinity"}
    loaded = Task.model_validate_json(path.read_bytes())
    assert type(loaded.loss) is float
    assert math.isnan(loaded.loss)
    assert loaded.losses[0] == 0.5
    assert math.isnan(loaded.losses[1])
    assert loaded.losses[2:] == [math.inf, -math.inf]
    assert loaded.nested == {"best": -math.inf}
    assert json.loads(loaded.model_dump_json())["losses"] == saved["losses"]  # stable
    table = tasktrace.read_tasks(path)
    assert table["loss"].dtype.kind == "f"
    assert math.isnan(table["loss"].iloc[0])
    assert table["nested.best"].iloc[0] == -math.inf
    (span,) = task_spans.get_finished_spans()
    assert math.isnan(span.attributes["tasktrace.data.loss"])  # a double: OTel allows NaN
    assert list(span.attributes["tasktrace.data.losses"])[2:] == [math.inf, -math.inf]
    shown = run_cli(["show", "--json", str(path)], cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["losses"] == saved["losses"]

    measured = Task.model_validate({"label": "m", "duration": math.nan, "cpu_time": math.inf})
    text = measured.model_dump_json()
    assert (json.loads(text)["duration"], json.loads(text)["cpu_time"]) == ("NaN", "Infinity")
    for reader in (Task, _LensKitLike):
        back = reader.model_validate_json(text)
        assert math.isnan(back.duration)  # type: ignore[arg-type]
        assert back.cpu_time == math.inf
    lenskit = _LensKitLike.model_validate_json(path.read_bytes())
    assert lenskit.model_extra["losses"] == saved["losses"]  # type: ignore[index]
