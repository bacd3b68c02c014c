"""The one scorer of a held-out split: rank each alias over every label and compute the metrics.

The evaluator reports a split's figures through it, and the training scripts validate with it,
so a validation figure logged while training is the figure the evaluator gives the same model.
"""

from __future__ import annotations

import numpy as np

from alias_label.data.split import Split
from alias_label.metrics import DEPTH, retrieval_metrics


def score_split(searcher, split: Split, split_name: str, depth: int = DEPTH) -> tuple[dict, np.ndarray, np.ndarray]:
    """(metrics, scores, ranked label rows) of ``searcher`` on every alias of one split, over every label."""
    pairs = split.pairs(split_name)
    scores, ranked = searcher.labels_for(pairs["alias"], depth)
    return retrieval_metrics(ranked, split.label_rows(pairs["label"])), scores, ranked
