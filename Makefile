# Two commands from a fresh clone: `make pipeline` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The defaults are bundled, so nothing needs the hub; set HF_HUB_OFFLINE=0 to use hub models.
HF_HUB_OFFLINE ?= 1
export HF_HUB_OFFLINE
export TOKENIZERS_PARALLELISM = false

# Flags per step, e.g. make pipeline TEACHER_ARGS="--epochs 3". The student trains one epoch here
# instead of its default 10, to fit a 2-core CPU; the README gives each step's time and what more
# epochs buy.
DATA_ARGS ?=
TEACHER_ARGS ?=
CROSS_ARGS ?=
STUDENT_ARGS ?= --epochs 1
STUDENT_CROSS_ARGS ?=
EVAL_ARGS ?=
# The index benchmark's default grid is the part of it the README's table was measured with;
# add 1024 dimensions with BENCH_INDEX_ARGS="--sizes 100000 1000000 --dims 1024".
BENCH_INDEX_ARGS ?= --sizes real 100000 1000000 --dims 384
SERVE_ARGS ?=
LOOKUPS ?= "UdeG" "MIT" "Batman Üniversitesi"

.PHONY: setup pipeline data teacher cross student student-cross evaluate lookups serve bench test lint clean-artifacts

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

setup: $(VENV)/.installed

data: setup
	$(BIN)/python scripts/prepare_data.py $(DATA_ARGS)

teacher: setup
	$(BIN)/python scripts/train_alias_label.py $(DATA_ARGS) $(TEACHER_ARGS)

# The teacher's cross-encoder, and its reranker refitted with its scores.
cross: setup
	$(BIN)/python scripts/train_cross_encoder.py $(CROSS_ARGS)

student: setup
	$(BIN)/python scripts/distill_model.py $(STUDENT_ARGS)

# The student's cross-encoder (from the teacher's, half the layers), and its reranker refitted.
student-cross: setup
	$(BIN)/python scripts/train_cross_encoder.py --model student $(STUDENT_CROSS_ARGS)

evaluate: setup
	$(BIN)/python scripts/evaluate_student.py $(EVAL_ARGS)

lookups: setup
	for query in $(LOOKUPS); do $(BIN)/python scripts/test_lookup.py "$$query" -k 3 || exit 1; done
	$(BIN)/python scripts/test_lookup.py --model student --reverse "Universidad de Guadalajara" -k 3

# The reconciliation service for OpenRefine, on http://127.0.0.1:8000/reconcile until Ctrl-C.
serve: setup
	$(BIN)/python scripts/serve.py $(SERVE_ARGS)

# Run again, each training step reuses what it saved with the same flags and data, so the pipeline
# goes on where it stopped; a script's --retrain (e.g. TEACHER_ARGS=--retrain) trains anew.
pipeline: setup
	$(BIN)/python scripts/gpu_check.py
	$(BIN)/python scripts/prepare_data.py $(DATA_ARGS)
	$(BIN)/python scripts/train_alias_label.py $(DATA_ARGS) $(TEACHER_ARGS)
	$(BIN)/python scripts/train_cross_encoder.py $(CROSS_ARGS)
	$(BIN)/python scripts/distill_model.py $(STUDENT_ARGS)
	$(BIN)/python scripts/train_cross_encoder.py --model student $(STUDENT_CROSS_ARGS)
	$(BIN)/python scripts/evaluate_student.py $(EVAL_ARGS)
	$(MAKE) --no-print-directory lookups

# Speed and memory, each printed as ratios from one run and saved to benchmarks/results/*.json.
# Needs the pipeline's models (query and reranked-lookup latency) and teacher cache (index vectors).
bench: setup
	$(BIN)/python benchmarks/query_latency.py
	$(BIN)/python benchmarks/rerank_latency.py
	$(BIN)/python benchmarks/lookup_overhead.py
	$(BIN)/python benchmarks/encode_batch.py
	$(BIN)/python benchmarks/cross_encoder_speed.py
	$(BIN)/python benchmarks/ranker_batch.py
	$(BIN)/python benchmarks/batch_alone.py
	$(BIN)/python benchmarks/int8_schemes.py
	$(BIN)/python benchmarks/index_scale.py $(BENCH_INDEX_ARGS)
	$(BIN)/python benchmarks/hnsw_ef_sweep.py
	$(BIN)/python benchmarks/encode_memory.py

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean-artifacts:
	find data/processed data/cache models/trained faiss logs -mindepth 1 -maxdepth 1 ! -name README.md \
		-exec rm -rf {} +
