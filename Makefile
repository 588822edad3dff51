# crossmodal: the two commands are `make reproduce` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= smoke

.PHONY: setup reproduce test test-fast lab lint clean-venv paper-dryrun gpu-check sweep-check

# Create the virtual environment, install the kit with its pinned dependencies, and register
# the Jupyter kernel "crossmodal" inside the venv (so notebooks run in this environment).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name crossmodal --display-name "Python (crossmodal)"
	touch $(STAMP)

setup: $(STAMP)

# Every smoke task x method, offline, on CPU, into reports/.
reproduce: $(STAMP)
	$(VENV)/bin/crossmodal reproduce --profile $(PROFILE)

# pytest + nbval in two lanes of one thread each (tests/run_all.sh says why and how to run one).
test: $(STAMP)
	bash tests/run_all.sh $(PY)

# The tests not marked slow (no end-to-end trainings of a minute, no notebooks).
test-fast: $(STAMP)
	$(PY) -m pytest tests -m "not slow"

# Every paper task x method (18 x 9) in the paper profile on publisher-format fixtures, with
# the full-size random-weight RoBERTa-base / Swin-base bodies (CI runs a subset, 1 layer).
paper-dryrun: $(STAMP)
	CROSSMODAL_DRYRUN=all CROSSMODAL_DRYRUN_LAYERS=full $(PY) -m pytest -q -m slow tests/test_dryrun.py

# ORCA and PaRe on the GPU (needs one; exits 3 with a message without one).
gpu-check: $(STAMP)
	$(PY) benchmarks/gpu_check.py

# Issue 16's check: a local sweep + collect of main_results (smoke) equals the committed
# reports/main_results/smoke table (one full main_results execution; MAX_PARALLEL jobs).
MAX_PARALLEL ?= 2
sweep-check: $(STAMP)
	$(PY) benchmarks/sweep_equality.py --max-parallel $(MAX_PARALLEL)

# jupyter/: the kit's Jupyter config (kernels over IPC: no TCP-encryption warning per kernel;
# JupyterLab settings overrides: no news pop-up).
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter $(VENV)/bin/jupyter lab --notebook-dir=. \
		$(if $(filter 0,$(shell id -u)),--allow-root)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests data_scripts benchmarks

clean-venv:
	rm -rf $(VENV)
