"""Train a small neural network on scikit-learn's bundled digits data, measured with tasktrace.

Every stage is a Task: loading, each training epoch (with its training and measuring steps), and
the final evaluation. The task tree is written to ``--file`` while it runs and at the end.

    python examples/train_digits.py --file runs/demo-task.json --epochs 5
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.metrics import accuracy_score
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

from tasktrace import Task


def main() -> None:
    """Run the experiment; print accuracy per epoch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=Path("runs/demo-task.json"))
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    args.file.parent.mkdir(parents=True, exist_ok=True)

    with Task("digits experiment", file=args.file, tags=["exp"], dataset="digits") as root:
        with Task("load data", tags=["io"]):
            digits = load_digits()
            x_train, x_test, y_train, y_test = train_test_split(
                digits.data, digits.target, test_size=0.25, random_state=42
            )
            scaler = StandardScaler().fit(x_train)
            x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
            # A larger copy of the training data, so the epochs do measurable work.
            x_big = np.repeat(x_train, 8, axis=0)
            y_big = np.repeat(y_train, 8)

        model = MLPClassifier(hidden_layer_sizes=(256, 128), random_state=0)
        classes = np.unique(digits.target)
        for epoch in range(args.epochs):
            with Task(f"epoch {epoch}", tags=["train", "epoch"], epoch=epoch) as ep:
                with Task(f"training epoch {epoch}"):
                    model.partial_fit(x_big, y_big, classes=classes)
                with Task(f"measuring epoch {epoch}"):
                    accuracy = accuracy_score(y_test, model.predict(x_test))
                ep.accuracy = round(float(accuracy), 4)
            print(f"epoch {epoch}: accuracy {accuracy:.3f}")

        with Task("evaluate", tags=["eval"]) as ev:
            ev.accuracy = round(float(accuracy_score(y_test, model.predict(x_test))), 4)
        root.final_accuracy = ev.accuracy
    print(f"task file: {args.file}")


if __name__ == "__main__":
    main()
