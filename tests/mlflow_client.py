"""Ask an MLflow tracking server through MLflow's own client API; run by ``.venv-mlflow``'s Python.

MLflow is not installed in the project's ``.venv`` (see :mod:`tests.side_servers`), so
``tests/test_mlflow.py`` runs this script with the side environment's interpreter::

    .venv-mlflow/bin/python tests/mlflow_client.py create-experiment URI NAME
        prints the new experiment's id
    .venv-mlflow/bin/python tests/mlflow_client.py traces URI EXPERIMENT_ID
        prints, as JSON, every trace of the experiment: its tags (MLflow keeps the resource
        attributes there) and its spans (span_id, parent_id, name, status, attributes)
"""

from __future__ import annotations

import json
import sys

from mlflow import MlflowClient


def create_experiment(uri: str, name: str) -> str:
    """Create an experiment called ``name``; return its id (``MlflowClient.create_experiment``)."""
    return MlflowClient(uri).create_experiment(name)


def traces(uri: str, experiment_id: str) -> list[dict[str, object]]:
    """Return every trace of the experiment, spans included (``MlflowClient.search_traces``)."""
    found = MlflowClient(uri).search_traces(locations=[experiment_id], max_results=100)
    return [
        {
            "tags": dict(trace.info.tags),
            "spans": [
                {
                    "span_id": span.span_id,
                    "parent_id": span.parent_id,
                    "name": span.name,
                    "status": span.status.status_code.value,
                    "attributes": span.attributes,
                }
                for span in trace.data.spans
            ],
        }
        for trace in found
    ]


def main(argv: list[str]) -> int:
    """Run the command named by ``argv[0]`` (see the module docstring)."""
    command, uri, argument = argv
    if command == "create-experiment":
        print(create_experiment(uri, argument))
    elif command == "traces":
        print(json.dumps(traces(uri, argument)))
    else:
        raise SystemExit(f"unknown command {command!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
