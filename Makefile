# fetoolkit: `make eval` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup fetch eval test test-slow test-all bench clean-venv help

help:
	@echo "make eval       set up .venv, fetch weights + ORL, run python -m fetoolkit.eval model=arcface"
	@echo "make test       set up .venv and run the default test suite"
	@echo "make test-slow  run the slow tests too"
	@echo "make bench      write bench.json"

# The venv is rebuilt only when the dependency pins change; a ready machine takes seconds.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e '.[dev]'
	$(PIP) --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

setup: $(STAMP)

fetch: setup
	$(PY) -m fetoolkit.fetch arcface --data orl

eval: fetch
	$(PY) -m fetoolkit.eval model=arcface dataset=orl

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) -m fetoolkit.bench --out bench.json

clean-venv:
	rm -rf $(VENV)
