# Two commands for a new user: `make run` and `make test`.
# Both create .venv and install what is missing; the stamp file tracks pyproject.toml.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run test bench bench-large bench-events eval tune lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	# torch first, pinned, so nothing pulls a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/memory-service serve

test: $(STAMP)
	$(VENV)/bin/ruff check memory_service indexers api cli tests benchmarks
	$(VENV)/bin/mypy memory_service indexers api cli
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks.search_bench --size $${SIZE:-10k}

bench-large: $(STAMP)
	$(PY) -m benchmarks.search_bench --size 1M

bench-events: $(STAMP)
	$(PY) -m benchmarks.events_bench

eval: $(STAMP)
	$(PY) -m benchmarks.eval_retrieval

tune: $(STAMP)
	$(VENV)/bin/memory-service tune

lint: $(STAMP)
	$(VENV)/bin/ruff check memory_service indexers api cli tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy memory_service indexers api cli

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
