"""Retrieval metrics against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from alias_label.metrics import counts_as_right, gold_ranks, recall_at_k, retrieval_metrics


def test_gold_ranks():
    ranked = np.array([[3, 1, 2], [0, 1, 2], [5, 6, 7]])
    assert gold_ranks(ranked, np.array([1, 0, 9])).tolist() == [2, 1, 0]


@pytest.mark.parametrize(("ranks", "top1", "top5", "mrr"), [
    ([1, 1, 1, 1], 1.0, 1.0, 1.0),
    ([1, 2, 0, 0], 0.25, 0.5, (1 + 0.5) / 4),
    ([6, 3, 1, 0], 0.25, 0.5, (1 / 6 + 1 / 3 + 1) / 4),
])
def test_retrieval_metrics(ranks, top1, top5, mrr):
    ranked = np.tile(np.arange(100, 110), (len(ranks), 1))
    gold = np.array([100 + r - 1 if r else -1 for r in ranks])
    metrics = retrieval_metrics(ranked, gold)
    assert metrics["top1"] == pytest.approx(top1)
    assert metrics["top5"] == pytest.approx(top5)
    assert metrics["mrr"] == pytest.approx(mrr)
    assert metrics["n"] == len(ranks)


def test_recall_at_k():
    ranked = np.array([[1, 2, 3], [4, 5, 6]])
    assert recall_at_k(ranked, [{1, 9}, {5, 6}], k=2) == pytest.approx((0.5 + 0.5) / 2)


def test_counts_as_right_folds_case_and_accents_as_the_evaluator_does():
    predicted = ["Centro Universitário Mario Pontes Jucá", "UNIVERSITÉ LAVAL", "Laval University", "", None]
    gold = ["Centro Universitário Mário Pontes Jucá", "Université Laval", "Université Laval", "", "Université Laval"]
    assert counts_as_right(predicted, gold).tolist() == [True, True, False, False, False]
