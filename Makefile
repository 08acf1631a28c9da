# MURA abnormality detection: every result is regenerated from this file.
# A fresh clone needs two commands: `make reproduce` and `make test`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
KERNEL := mura
PROFILE ?= sample
DATA ?=
GPUS ?=

.DEFAULT_GOAL := help
.PHONY: help setup lock reproduce test lint lab data-sample benchmark clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  variables:   PROFILE=sample|mura|paper|smoke (reproduce), DATA=/path/to/MURA-v1.1,"
	@echo "               GPUS=N (train with torchrun on N GPUs)"

setup: $(SETUP_STAMP) ## create .venv, install the project, register the Jupyter kernel and nbstripout

# The stamp makes setup a no-op until pyproject.toml changes. The kernel goes into the venv
# (--sys-prefix), so nothing is written to the user's home.
# Versions come from requirements.lock (exact pins, made by `make lock`), so that a clone
# installs what made results/ and not whatever is newest.
$(SETUP_STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements.lock -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (mura)" >/dev/null
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		$(VENV)/bin/nbstripout --install --attributes .gitattributes; \
	else \
		echo "note: not a git checkout, nbstripout filter not installed"; \
	fi
	@touch $@

# torch and torchvision: the releases that made results/ (on the project's machines pip takes
# them from a local disk cache); everything else resolves to what pyproject.toml allows.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1

lock: setup ## regenerate requirements.lock from pyproject.toml with pip-tools (pip-compile)
	$(PY) -m pip install --quiet --disable-pip-version-check 'pip-tools>=7.4'
	printf '%s\n' $(TORCH_PINS) > $(VENV)/torch-pins.txt
	$(VENV)/bin/pip-compile --quiet --extra dev --strip-extras --no-emit-index-url \
		--no-emit-find-links --constraint $(VENV)/torch-pins.txt \
		--output-file requirements.lock pyproject.toml

reproduce: setup ## run the notebooks on PROFILE (default: the bundled sample) into results/PROFILE/
	$(PY) -m mura_lib.reproduce --profile $(PROFILE) $(if $(DATA),--data "$(DATA)") \
		$(if $(GPUS),--set gpus=$(GPUS))

test: setup ## run the test suite on every core (includes the notebooks on the smoke profile)
	$(PY) -m pytest -q -n auto

lint: setup ## check the code with ruff
	$(VENV)/bin/ruff check mura_lib tests benchmarks
	$(VENV)/bin/ruff format --check mura_lib tests benchmarks

# JupyterLab refuses to start as root (the usual user inside a container) unless told that
# this is on purpose: pass --allow-root exactly when make runs as root.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: setup ## open JupyterLab with the project's kernel (also as root, in a container)
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/

data-sample: setup ## regenerate the bundled synthetic sample in data_sample/ (deterministic)
	$(PY) -m mura_lib.synthetic --profile sample --out data_sample --overwrite

benchmark: setup ## measure the image pipeline against the original loader (600 images, CPU)
	$(PY) benchmarks/loader.py --images 600 --device cpu --json

clean: ## remove caches and build leftovers (keeps .venv, data_sample/ and results/)
	rm -rf cache/ .pytest_cache/ .ruff_cache/ build/ dist/ *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
