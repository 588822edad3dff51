# crossmodal: the two commands are `make reproduce` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= smoke

.PHONY: setup reproduce test lab lint clean-venv

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

test: $(STAMP)
	$(PY) -m pytest -q

# jupyter/: the kit's Jupyter config (kernels over IPC: no TCP-encryption warning per kernel;
# JupyterLab settings overrides: no news pop-up).
lab: $(STAMP)
	JUPYTER_CONFIG_PATH=$(CURDIR)/jupyter $(VENV)/bin/jupyter lab --notebook-dir=. \
		$(if $(filter 0,$(shell id -u)),--allow-root)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests data_scripts benchmarks

clean-venv:
	rm -rf $(VENV)
