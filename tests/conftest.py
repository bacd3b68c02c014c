"""Fixtures: a tiny randomly initialised BERT with the bundled tokenizer, and a small data slice.

Every test runs offline on CPU in its own artifact root (ALIAS_LABEL_HOME), so nothing
touches the repo's data/, models/, faiss/ or logs/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def make_tiny_model(target: Path, hidden: int = 32, layers: int = 2, heads: int = 2, intermediate: int | None = None,
                    seed: int = 0) -> Path:
    """A SentenceTransformer folder: random BERT of the given shape + mean pooling + the bundled tokenizer."""
    from alias_label.models.random import random_sentence_model

    return random_sentence_model(target, hidden, layers, heads, intermediate, seed)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """A private artifact root for one test."""
    monkeypatch.setenv("ALIAS_LABEL_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.fixture(scope="session")
def swot_slice(tmp_path_factory) -> Path:
    """A few hundred real swot entities, written once as a parquet data file."""
    from alias_label.data.swot import build_swot_table

    table = build_swot_table()
    aliased = sorted(table.loc[table["alias"] != "", "qid"].unique())[:150]
    bare = sorted(table.loc[table["alias"] == "", "qid"].unique())[:150]
    target = tmp_path_factory.mktemp("data") / "swot_slice.parquet"
    table[table["qid"].isin(set(aliased) | set(bare))].to_parquet(target, index=False)
    return target


# Three rounds of 4 epochs, the default round structure: each later one trains on negatives mined by the one before.
TEACHER_SMOKE = ["--limit", "40", "--epochs", "4", "--batch-size", "16", "--lr", "3e-3", "--max-seq-length", "32"]
STUDENT_SMOKE = ["--epochs", "3", "--batch-size", "16", "--lr", "1e-3", "--student-layers", "1"]
CROSS_SMOKE = ["--train-aliases", "80", "--batch-size", "16", "--lr", "1e-3", "--device", "cpu"]


@pytest.fixture(scope="session")
def pipeline_home(tmp_path_factory, tiny_model, swot_slice) -> Path:
    """One artifact root holding a finished smoke teacher and student, each with its cross-encoder, as
    `make pipeline` builds them, shared by read-only tests."""
    import distill_model
    import train_alias_label
    import train_cross_encoder

    home = tmp_path_factory.mktemp("pipeline_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALIAS_LABEL_HOME", str(home))
        patch.setenv("HF_HUB_OFFLINE", "1")
        train_alias_label.main(train_alias_label.parse_args(
            ["--data", str(swot_slice), "--base-model", str(tiny_model), *TEACHER_SMOKE]))
        train_cross_encoder.main(train_cross_encoder.parse_args(["--base", str(tiny_model), *CROSS_SMOKE]))
        distill_model.main(distill_model.parse_args(STUDENT_SMOKE))
        train_cross_encoder.main(train_cross_encoder.parse_args(["--model", "student", *CROSS_SMOKE]))
    return home


@pytest.fixture()
def in_pipeline_home(pipeline_home, monkeypatch) -> Path:
    monkeypatch.setenv("ALIAS_LABEL_HOME", str(pipeline_home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return pipeline_home


def unit_rows(n: int, d: int = 8, seed: int = 0) -> np.ndarray:
    """Random unit vectors, float32, as the encoder would return them."""
    rows = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def write_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path
