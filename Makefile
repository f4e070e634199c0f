# Two commands on a fresh machine: `make run` starts the service, `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit train train-seg train-multitask evaluate system-deps service-deps lock clean

# The locked versions (hash-checked), then the project itself without resolving again.
$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Re-resolve the lock files after a change to the pins in pyproject.toml: requirements/service.txt
# (the service, installed by the Docker image) and requirements/dev.txt (with the train and dev
# extras, installed by every make target).
LOCK_VENV := .cache/lock-venv
PIP_COMPILE := $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
lock:
	test -x $(LOCK_VENV)/bin/pip-compile || ($(PYTHON) -m venv $(LOCK_VENV) && \
		$(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2)
	$(PIP_COMPILE) --output-file requirements/service.txt pyproject.toml
	$(PIP_COMPILE) --extra train --extra dev --output-file requirements/dev.txt pyproject.toml

# Two glibc malloc arenas instead of one per thread (up to 16 on two cores): the worker threads of
# concurrent requests then reuse freed memory instead of each keeping its own (docs/performance.md).
run: $(STAMP) service-deps
	MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} $(PY) -m app

system-deps:
	bash scripts/install-system-deps.sh

service-deps:
	bash scripts/install-system-deps.sh --service

lint: $(STAMP)
	$(PY) -m ruff check app ml tests bench
	$(PY) -m ruff format --check app ml tests bench

typecheck: $(STAMP)
	$(PY) -m mypy

# Every test, in a random order whose seed pytest prints first (replay an order with
# `.venv/bin/python -m pytest -p randomly --randomly-seed=<seed>`), with a time limit per test.
test: $(STAMP) system-deps lint typecheck
	$(PY) -m pytest

# The quick loop: no datasets, no server, no browser (about a minute on two cores).
unit: $(STAMP)
	$(PY) -m pytest -m "not slow and not data and not integration and not e2e"

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

# The one network for every label (ich-multitask), from the trained classifier (make train):
# A keeps the classifier's encoder and slice head and teaches the decoder and subtype head; B
# lets everything but the batch normalisation learn from every label at a tenth of A's rate.
# The bundle chooses thresholds and the study rule on validation and measures test once.
MULTITASK_RUN := artifacts/experiments/multitask-compact
MULTITASK_B_RATE ?= 0.00005
MULTITASK_B_MIN ?= 45
MULTITASK_B_SHARES ?= ct_ich=0.5 head_ct=0.1 phe_sich=0.2 bhsd_seg=0.2
MULTITASK_COMMON := --image-size 288 --width 32 --backbone compact --steps-per-epoch 60 --patience 30
train-multitask: $(STAMP)
	$(PY) -m ml.train_multitask --output $(MULTITASK_RUN)-a $(MULTITASK_COMMON) --freeze encoder \
		--encoder-from model_store/ich-compact/1.1.0/model.keras --learning-rate 0.001 --time-budget-min 25 \
		--shares ct_ich=0.3 head_ct=0.05 phe_sich=0.35 bhsd_seg=0.3
	$(PY) -m ml.train_multitask --output $(MULTITASK_RUN)-b $(MULTITASK_COMMON) --freeze batchnorm --no-rotate-90 \
		--init-from $(MULTITASK_RUN)-a/model.keras --learning-rate $(MULTITASK_B_RATE) \
		--time-budget-min $(MULTITASK_B_MIN) --shares $(MULTITASK_B_SHARES)
	$(PY) -m ml.evaluate_multitask --model-dir $(MULTITASK_RUN)-b

clean:
	rm -rf $(VENV) .cache .pytest_cache .mypy_cache .ruff_cache
