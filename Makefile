# Two commands for a new user: `make run` and `make test`.
# Both create .venv and install what is missing; the stamp file tracks pyproject.toml.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: run stop fuzz test bench bench-large bench-events bench-sync bench-fairness eval train-ranker train-cross-encoder tune lint typecheck clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml client/pyproject.toml | $(PY)
	# torch first, pinned, so nothing pulls a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# the client distribution, editable, with its LangGraph and MCP extras
	$(PY) -m pip install --quiet -e './client[langgraph,mcp]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/memory-service serve

stop: $(STAMP)
	$(VENV)/bin/memory-service stop

# schemathesis over the whole live OpenAPI document: every phase, FUZZ_EXAMPLES per operation
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} $(PY) -m pytest tests/test_openapi_conformance.py -q -s

test: $(STAMP)
	$(VENV)/bin/ruff check memory_service indexers api cli client tests benchmarks
	$(VENV)/bin/mypy memory_service indexers api cli client/memory_service_client
	@scripts/system-packages
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) -m benchmarks.search_bench --size $${SIZE:-10k}

bench-large: $(STAMP)
	$(PY) -m benchmarks.search_bench --size 1M

bench-events: $(STAMP)
	$(PY) -m benchmarks.events_bench

bench-sync: $(STAMP)
	$(PY) -m benchmarks.sync_bench

# a tenant's search latency beside another tenant's 32-connection search flood (needs wrk)
bench-fairness: $(STAMP)
	$(PY) -m benchmarks.fairness_bench $${ARGS:-}

eval: $(STAMP)
	$(PY) -m benchmarks.eval_retrieval

# fits the learned re-ranker on SciFact's train queries and LoCoMo conversations 0-4 and
# writes memory_service/retrieval/ranker.json (ARGS: see --help)
train-ranker: $(STAMP)
	$(PY) -m benchmarks.train_ranker $${ARGS:-}

# fine-tunes the cross-encoder of "rerank": "cross" from the packaged MiniLM on the same
# training data and writes it to benchmarks/.cache/cross-encoder (ARGS: see --help); serve
# it with MEMORY_CROSS_ENCODER_PATH=<that folder>
train-cross-encoder: $(STAMP)
	nice -n 10 $(PY) -m benchmarks.train_cross_encoder $${ARGS:-}

tune: $(STAMP)
	$(VENV)/bin/memory-service tune

lint: $(STAMP)
	$(VENV)/bin/ruff check memory_service indexers api cli client tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy memory_service indexers api cli client/memory_service_client

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
