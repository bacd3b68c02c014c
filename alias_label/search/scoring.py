"""The one scorer of a held-out split: rank each alias over every label and compute the metrics.

The evaluator reports a split's figures through it, and the training scripts validate with it,
so a validation figure logged while training is the figure the evaluator gives the same model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from alias_label.data.kinds import ALIAS_KINDS
from alias_label.data.split import Split
from alias_label.metrics import DEPTH, classes_of, recall_at_k, retrieval_metrics


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


def label_to_alias_gold(split: Split, pairs: pd.DataFrame, kinds: np.ndarray) -> tuple[list[str], dict[str, list]]:
    """Each label of ``pairs``, with the alias-table rows of its aliases there as the gold set: all of
    them (``"all"``), and those of each alias kind (an empty set where the label has none of it)."""
    groups = list(pairs.assign(kind=kinds).groupby("label"))
    gold = {"all": [set(split.alias_rows(group["alias"]).tolist()) for _, group in groups]}
    for kind in ALIAS_KINDS:
        gold[kind] = [set(split.alias_rows(group.loc[group["kind"] == kind, "alias"]).tolist()) for _, group in groups]
    return [label for label, _ in groups], gold


def label_to_alias_recall(alias_ranked: np.ndarray, gold: dict[str, list], k: int = 10) -> dict[str, float]:
    """Recall@k of a label -> alias search, overall (``"all"``) and for each alias kind over the
    labels with aliases of that kind (kinds no label has are left out)."""
    recall = {}
    for kind, sets in gold.items():
        having = [i for i, rows in enumerate(sets) if rows]
        if having:
            recall[kind] = recall_at_k(alias_ranked[having], [sets[i] for i in having], k)
    return recall
