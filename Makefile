# Two commands do all set-up on a fresh machine:  make demo   and   make test
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet

.PHONY: demo test bench docs figures clean

# torch 2.13.0 first: a CPU build from a local wheel; a bare `torch` requirement would pull CUDA.
$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	touch $@

$(VENV)/.installed-%: $(VENV)/.torch pyproject.toml
	$(PIP) -e ".[$(subst +,$(comma),$*)]"
	touch $@

comma := ,

demo: $(VENV)/.installed-io
	$(VENV)/bin/stemflow demo

test: $(VENV)/.installed-io+test+docs
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed-io+test
	$(PY) benchmarks/run_all.py

# The documentation site (site/), offline; its examples run during the build.
docs: $(VENV)/.installed-io+docs
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --quiet
	@echo "wrote site/index.html"

# The user guide's figures from the simulator.
figures: $(VENV)/.installed-io
	$(PY) docs/make_figures.py

clean:
	rm -rf $(VENV) build *.egg-info
