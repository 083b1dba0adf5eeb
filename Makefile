# The two set-up commands of the README: `make demo` and `make test`.
# Each creates the virtual environment in .venv (with python3 >= 3.10) and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-phoenix test-mlflow test-lenskit test-browser docs benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[examples]'
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.demo-installed

## Run the demo workload under tasktrace, write runs/demo-task.json and print its task tree.
demo: $(VENV)/.demo-installed
	$(BIN)/python examples/train_digits.py --file runs/demo-task.json
	$(BIN)/tasktrace show runs/demo-task.json

## Run the whole test suite (lint, format, types, tests) and build the docs with warnings as errors.
test: $(VENV)/.dev-installed
	bash .ci/install-services.sh
	$(BIN)/python -m ruff check src tests benchmarks examples
	$(BIN)/python -m ruff format --check src tests benchmarks examples docs/conf.py
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest
	$(BIN)/python -m sphinx -W --keep-going -q -b html docs docs/_build/html

## Separate jobs: the end-to-end tests against Arize Phoenix and against MLflow's tracking server.
## Each backend gets its own side environment (about 850 MB each), never installed into .venv.
.venv-phoenix/.installed:
	$(PYTHON) -m venv .venv-phoenix
	.venv-phoenix/bin/python -m pip install --quiet arize-phoenix
	touch $@

.venv-mlflow/.installed:
	$(PYTHON) -m venv .venv-mlflow
	.venv-mlflow/bin/python -m pip install --quiet mlflow
	touch $@

test-phoenix: $(VENV)/.dev-installed .venv-phoenix/.installed
	PHOENIX_BIN=.venv-phoenix/bin/phoenix $(BIN)/python -m pytest -m phoenix

test-mlflow: $(VENV)/.dev-installed .venv-mlflow/.installed
	MLFLOW_VENV=.venv-mlflow $(BIN)/python -m pytest -m mlflow

## A separate job: a program that configured LensKit itself (lenskit.config.configure()) gets
## energy from a real Prometheus. LensKit brings PyTorch: a side environment, .venv-lenskit, with
## the CPU build (torch==2.13.0), LensKit 2025.8.1 and this project (~1.5 GB).
test-lenskit: $(VENV)/.dev-installed .venv-lenskit/.installed
	bash .ci/install-services.sh
	$(BIN)/python -m pytest -m lenskit

.venv-lenskit/.installed: pyproject.toml
	test -x .venv-lenskit/bin/python || $(PYTHON) -m venv .venv-lenskit
	.venv-lenskit/bin/python -m pip install --quiet torch==2.13.0
	.venv-lenskit/bin/python -m pip install --quiet lenskit==2025.8.1 -e .
	touch $@

## A separate job: the browser test of the HTML report in headless Chromium (Debian's package,
## installed with apt-get where missing); it also refreshes docs/_static/report-demo.png.
test-browser: $(VENV)/.dev-installed
	sh .ci/install-chromium.sh
	$(BIN)/python -m pytest -m browser

benchmarks: $(VENV)/.dev-installed
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .venv-phoenix .venv-mlflow .venv-lenskit docs/_build runs
