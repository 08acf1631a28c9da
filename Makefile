# MURA abnormality detection: every result is regenerated from this file.
# A fresh clone needs two commands: `make reproduce` and `make test`.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-stamp
KERNEL := mura
PROFILE ?= sample
DATA ?=

.DEFAULT_GOAL := help
.PHONY: help setup reproduce test lint lab data-sample benchmark clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'
	@echo "  variables:   PROFILE=sample|mura|smoke (reproduce), DATA=/path/to/MURA-v1.1"

setup: $(SETUP_STAMP) ## create .venv, install the project, register the Jupyter kernel and nbstripout

# The stamp makes setup a no-op until pyproject.toml changes. The kernel goes into the venv
# (--sys-prefix), so nothing is written to the user's home.
$(SETUP_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (mura)" >/dev/null
	@if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then \
		$(VENV)/bin/nbstripout --install --attributes .gitattributes; \
	else \
		echo "note: not a git checkout, nbstripout filter not installed"; \
	fi
	@touch $@

reproduce: setup ## run the notebooks on PROFILE (default: the bundled sample) into results/PROFILE/
	$(PY) -m mura_lib.reproduce --profile $(PROFILE) $(if $(DATA),--data "$(DATA)")

test: setup ## run the test suite (includes the notebooks on the smoke profile)
	$(PY) -m pytest -q

lint: setup ## check the code with ruff
	$(VENV)/bin/ruff check mura_lib tests benchmarks
	$(VENV)/bin/ruff format --check mura_lib tests benchmarks

lab: setup ## open JupyterLab with the project's kernel
	$(VENV)/bin/jupyter lab notebooks/

data-sample: setup ## regenerate the bundled synthetic sample in data_sample/ (deterministic)
	$(PY) -m mura_lib.synthetic --profile sample --out data_sample --overwrite

benchmark: setup ## measure the image pipeline against the original loader (600 images, CPU)
	$(PY) benchmarks/loader.py --images 600 --device cpu --json

clean: ## remove caches and build leftovers (keeps .venv, data_sample/ and results/)
	rm -rf cache/ .pytest_cache/ .ruff_cache/ build/ dist/ *.egg-info
	find . -name __pycache__ -type d -prune -not -path './$(VENV)/*' -exec rm -rf {} +
