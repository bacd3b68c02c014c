"""Retrieval metrics over ranked candidate lists: top-k accuracy, MRR and recall@k.

Every system (dense, TF-IDF, hybrid, any index type) hands in the same thing, a matrix
of ranked candidate row ids, so all of them are scored by the same code.
"""

from __future__ import annotations

import numpy as np

from alias_label.data.text import fold

KS = (1, 5, 10)


DEPTH = 100  # MRR counts a gold label found within the first DEPTH candidates (MRR@100)


def counts_as_right(predicted, gold) -> np.ndarray:
    """Whether each predicted label counts as the gold one: equal up to case and accents, the
    evaluator's rule (``Split.label_classes``, docs/search-and-abstain.md). A missing prediction
    (a blank query's row) is wrong."""
    return np.array([isinstance(guess, str) and guess != "" and fold(guess) == fold(answer)
                     for guess, answer in zip(predicted, gold, strict=True)], dtype=bool)


def classes_of(rows: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Each ranked row's class (``Split.label_classes``), -1 kept for an empty slot."""
    rows = np.asarray(rows)
    return np.where(rows < 0, -1, classes[np.maximum(rows, 0)])


def gold_ranks(ranked_ids: np.ndarray, gold_ids: np.ndarray) -> np.ndarray:
    """1-based rank of each query's gold id in its ranked list; 0 when it is not in the list."""
    hits = np.asarray(ranked_ids) == np.asarray(gold_ids)[:, None]
    return np.where(hits.any(axis=1), hits.argmax(axis=1) + 1, 0)


def retrieval_metrics(ranked_ids: np.ndarray, gold_ids: np.ndarray, ks=KS) -> dict:
    """top-k accuracy for each k and MRR, as fractions in [0, 1]."""
    ranks = gold_ranks(ranked_ids, gold_ids)
    found = ranks > 0
    metrics = {f"top{k}": float(np.mean(found & (ranks <= k))) for k in ks}
    metrics["mrr"] = float(np.mean(np.where(found, 1.0 / np.maximum(ranks, 1), 0.0)))
    metrics["n"] = int(len(ranks))
    return metrics


def recall_at_k(ranked_ids: np.ndarray, gold_sets: list[set[int]], k: int = 10) -> float:
    """Mean fraction of each query's gold ids found in its first k candidates."""
    per_query = [len(gold & set(row[:k].tolist())) / len(gold) for row, gold in zip(ranked_ids, gold_sets, strict=True)]
    return float(np.mean(per_query)) if per_query else 0.0
