# Set-up is part of each target: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch pinned to its CPU build: an unpinned torch from PyPI pulls a multi-GB CUDA build.
# The CPU index is given with --extra-index-url, not --index-url: where
# download.pytorch.org is reachable, 2.13.0+cpu ranks above PyPI's 2.13.0 and is installed;
# build machines that cannot resolve that host (ours reach only PyPI and its mirrors, where
# --index-url fails) still install from their own indexes or wheel cache after pip's retries.
TORCH ?= torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: demo test install install-test

# The package and what it needs at run time (make demo).
install: $(VENV)/.installed

# Also pytest and slicer-core (vtk, about 800 MB), for the tests only (make test).
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --extra-index-url $(TORCH_INDEX) "$(TORCH)"
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

demo: install
	$(VENV)/bin/clinicalfmamba demo

test: install-test
	$(PY) -m pytest Testing
