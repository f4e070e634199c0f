# Two commands on a fresh machine: `make run` starts the service, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit slow train evaluate system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m app

system-deps:
	bash scripts/install-system-deps.sh

lint: $(STAMP)
	$(PY) -m ruff check app ml tests bench
	$(PY) -m ruff format --check app ml tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest

unit: $(STAMP)
	$(PY) -m pytest -m "not slow"

# The served model: 40 min from scratch, then 40 min more at a lower learning rate from those
# weights (same seed, split and threshold rule), then the bundle check and plots.
train: $(STAMP)
	$(PY) -m ml.train --name ich-compact --version 1.0.0 --output artifacts/experiments/compact-stage1 --time-budget-min 40
	$(PY) -m ml.train --name ich-compact --version 1.0.0 --time-budget-min 40 --learning-rate 0.001 \
		--init-from artifacts/experiments/compact-stage1/model.keras
	$(PY) -m ml.export --model-dir model_store/ich-compact/1.0.0

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
