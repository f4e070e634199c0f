# Two commands on a fresh machine: `make run` starts the service, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit slow train train-seg evaluate system-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Two glibc malloc arenas instead of one per thread (up to 16 on two cores): the worker threads of
# concurrent requests then reuse freed memory instead of each keeping its own (docs/performance.md).
run: $(STAMP)
	MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} $(PY) -m app

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
# weights (1.0.0), then up to 45 min at a 288 px input from the 1.0.0 weights (1.1.0, served);
# same seed, split and threshold rule throughout; each bundle checked and plotted by ml.export.
train: $(STAMP)
	$(PY) -m ml.train --name ich-compact --version 1.0.0 --output artifacts/experiments/compact-stage1 --time-budget-min 40
	$(PY) -m ml.train --name ich-compact --version 1.0.0 --time-budget-min 40 --learning-rate 0.001 \
		--init-from artifacts/experiments/compact-stage1/model.keras
	$(PY) -m ml.export --model-dir model_store/ich-compact/1.0.0
	$(PY) -m ml.train --name ich-compact --version 1.1.0 --image-size 288 --time-budget-min 45 \
		--learning-rate 0.0005 --patience 15 --init-from model_store/ich-compact/1.0.0/model.keras
	$(PY) -m ml.export --model-dir model_store/ich-compact/1.1.0
	$(MAKE) train-seg

# The segmentation-and-subtype models: each reuses its classifier's preprocessing and CT-ICH
# split; 1.1.0 (served, 288 px) continues the 1.0.0 weights.
train-seg: $(STAMP)
	$(PY) -m ml.train_seg --name ich-unet --version 1.0.0 --classifier-dir model_store/ich-compact/1.0.0 \
		--epochs 80 --time-budget-min 35
	$(PY) -m ml.train_seg --name ich-unet --version 1.1.0 --classifier-dir model_store/ich-compact/1.1.0 \
		--epochs 80 --time-budget-min 35 --init-from model_store/ich-unet/1.0.0/model.keras

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
