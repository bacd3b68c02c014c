"""The one scorer of a held-out split: rank each alias over every label and compute the metrics.

The evaluator reports a split's figures through it, and the training scripts validate with it,
so a validation figure logged while training is the figure the evaluator gives the same model.
"""

from __future__ import annotations

import numpy as np

from alias_label.data.split import Split
from alias_label.metrics import DEPTH, classes_of, retrieval_metrics


def score_split(searcher, split: Split, split_name: str, depth: int = DEPTH) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, scores, ranked label rows) of ``searcher`` on every alias of one split, over every label.

    A label equal to the gold one up to case and accents counts as right (``Split.label_classes``);
    ``top1_folded_only`` counts the aliases whose top-1 is right only that way.
    """
    pairs = split.pairs(split_name)
    scores, ranked = searcher.labels_for(pairs["alias"], depth)
    return ranked_metrics(split, ranked, pairs["label"]), scores, ranked


def ranked_metrics(split: Split, ranked: np.ndarray, gold_labels) -> dict:
    """``score_split``'s metrics of label rows ranked for each alias, against their gold labels."""
    metrics = retrieval_metrics(*correct_classes(split, ranked, gold_labels))
    gold = split.label_rows(gold_labels)
    metrics["top1_folded_only"] = int(((ranked[:, 0] != gold) & is_right(split, ranked[:, 0], gold)).sum())
    return metrics


def correct_classes(split: Split, ranked: np.ndarray, gold_labels) -> tuple[np.ndarray, np.ndarray]:
    """Ranked rows and gold rows as label classes, for ``retrieval_metrics``."""
    return classes_of(ranked, split.label_classes), split.label_classes[split.label_rows(gold_labels)]


def is_right(split: Split, rows: np.ndarray, gold_rows: np.ndarray) -> np.ndarray:
    """Whether each predicted label row names the gold label, up to case and accents."""
    return classes_of(rows, split.label_classes) == split.label_classes[np.asarray(gold_rows)]
