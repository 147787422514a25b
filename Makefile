# fetoolkit: `make eval` and `make test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: setup fetch eval lint test test-avx2 test-slow test-all bench bench-serve serve gate gate-update notebooks clean-venv help bench-metrics bench-extract compare soak

help:
	@echo "make eval       set up .venv, fetch weights + ORL, run python -m fetoolkit.eval model=arcface"
	@echo "make test       set up .venv and run the default test suite"
	@echo "make lint       ruff (lint + format check) and mypy on the public API"
	@echo "make test-avx2  the default suite with the CPU seen as AVX2-only (the non-VNNI kernels, on a VNNI machine)"
	@echo "make test-slow  run the slow tests too"
	@echo "make bench      write bench.json (models) and bench_detect.json (detectors)"
	@echo "make bench-metrics  time the metric functions on 10 million pairs, write bench_metrics.json"
	@echo "make bench-extract  images/s of python -m fetoolkit.extract (local 1/2 workers, ray) on ORL and wild photos, write bench_extract.json"
	@echo "make compare DIR=multirun/eval/...  collect a sweep into comparison.md/.csv + roc_overlay.png"
	@echo "make gate       accuracy regression gate against eval/baselines (CI runs it after the tests)"
	@echo "make gate-update REASON=\"...\"  rewrite the baselines, recording why"
	@echo "make notebooks  execute every notebook headless"
	@echo "make serve      run the HTTP embedding service (PORT, default 8002)"
	@echo "make bench-serve  benchmark the service on loopback, write bench_serve.json"
	@echo "make soak       the service under load and hostile clients (~3 min), write soak.json"

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

lint: setup
	$(BIN)/ruff check fetoolkit tests
	$(BIN)/ruff format --check fetoolkit tests
	$(BIN)/mypy

# CPUID answered without AVX-512/VNNI/AMX (fetoolkit/native/cpuid_avx2.c), so onnxruntime, torch
# and OpenBLAS run the kernels of an AVX2-only CPU (AMD Zen 2/3): both kinds tested on one machine.
test-avx2: setup
	LD_PRELOAD="$$($(PY) -c 'from fetoolkit.native import avx2_only_env; print(avx2_only_env()["LD_PRELOAD"])')" \
	  $(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

test-all: setup
	$(PY) -m pytest -q -m "slow or not slow"

bench: setup
	$(PY) -m fetoolkit.bench --out bench.json
	$(PY) -m fetoolkit.bench_detect --out bench_detect.json

bench-metrics: setup
	$(PY) -m fetoolkit.bench_metrics --pairs 10000000 --out bench_metrics.json

# Each case runs python -m fetoolkit.extract in a fresh process into a temporary store (~3 minutes on 2 cores).
bench-extract: setup
	$(PY) -m fetoolkit.bench_extract --out bench_extract.json

compare: setup
	$(PY) -m fetoolkit.compare $(DIR)

serve: setup
	$(PY) -m fetoolkit.serve model=arcface

# The service under load and hostile clients at once (stalled uploads, scan bombs, huge headers, face
# mosaics, tiny-crop batches, padded JSON); about 3 minutes; RSS and latency over time in soak.json.
soak: setup
	$(PY) -m fetoolkit.soak --seconds 150 --out soak.json

# Loopback only; about 2-3 minutes (each load phase is bounded in time).
bench-serve: setup
	$(PY) -m fetoolkit.bench_serve --out bench_serve.json

gate: setup
	$(PY) -m fetoolkit.gate

gate-update: setup
	@test -n "$(REASON)" || { echo 'usage: make gate-update REASON="why the baselines change"'; exit 2; }
	$(PY) -m fetoolkit.gate --update --reason "$(REASON)"

# Executes in a scratch copy: the notebooks in git stay without outputs.
notebooks: setup
	for nb in notebooks/*.ipynb; do $(BIN)/jupyter-execute "$$nb" --output="$$(mktemp -d)/$$(basename $$nb)" || exit 1; done

clean-venv:
	rm -rf $(VENV)
