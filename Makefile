# Two commands from a fresh clone: `make pipeline` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The defaults are bundled, so nothing needs the hub; set HF_HUB_OFFLINE=0 to use hub models.
HF_HUB_OFFLINE ?= 1
export HF_HUB_OFFLINE
export TOKENIZERS_PARALLELISM = false

# Extra flags per step, e.g. make pipeline TEACHER_ARGS="--epochs 3".
DATA_ARGS ?=
TEACHER_ARGS ?=

.PHONY: setup pipeline data teacher test lint clean-artifacts

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

pipeline: setup
	$(BIN)/python scripts/gpu_check.py
	$(BIN)/python scripts/prepare_data.py $(DATA_ARGS)
	$(BIN)/python scripts/train_alias_label.py $(DATA_ARGS) $(TEACHER_ARGS)

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check .

clean-artifacts:
	find data/processed data/cache models/trained faiss logs -mindepth 1 -maxdepth 1 ! -name README.md \
		-exec rm -rf {} +
