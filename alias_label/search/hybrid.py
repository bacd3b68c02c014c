"""Hybrid retrieval: dense and TF-IDF candidate lists fused by a weight and an exponent fitted on validation.

Dense and character n-gram retrieval fail on different aliases: embeddings find translations
and paraphrases, n-grams find spelling variants and truncations the model never saw. The hybrid
ranks the union of both candidate lists by ``w * dense + (1 - w) * lexical ** p``. An exponent
below 1 narrows the gaps between high TF-IDF cosines and widens those between low ones, so a
label that shares some words with the alias gains on one that shares none, and near-exact
spellings do not swamp the dense score.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from alias_label.metrics import classes_of, recall_at_k, retrieval_metrics

log = logging.getLogger(__name__)


WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)


EXPONENT_GRID = (0.25, 0.5, 0.75, 1.0)


FUSION_DEPTH = 100  # candidates taken from each side before fusing


CHUNK_ROWS = 1024  # queries fused at a time; bounds the (rows x candidates x depth) comparison


def _scores_of(ids: np.ndarray, list_ids: np.ndarray, list_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's score in another ranked list, or that list's lowest score when it is absent.

    The lowest listed score is an upper bound on an absent candidate's true score, so a candidate
    is never ranked below one it would beat with exact scores on both sides.
    """
    match = ids[:, :, None] == list_ids[:, None, :]
    found = match.any(axis=2)
    listed = np.where(match, list_scores[:, None, :], 0.0).sum(axis=2)
    return np.where(found, listed, list_scores[:, -1:]), found


def fuse(dense: tuple[np.ndarray, np.ndarray], lexical: tuple[np.ndarray, np.ndarray], weight: float,
         k: int, exponent: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of the union of two ranked lists by weight * dense + (1 - weight) * lexical ** exponent.

    Lexical scores are TF-IDF cosines, never negative. k is capped at the longer list's length,
    which the union always fills.
    """
    k = min(k, max(dense[1].shape[1], lexical[1].shape[1]))
    out_scores, out_ids = [], []
    for start in range(0, len(dense[1]), CHUNK_ROWS):
        d_scores, d_ids = (a[start:start + CHUNK_ROWS] for a in dense)
        l_scores, l_ids = (a[start:start + CHUNK_ROWS] for a in lexical)
        ids = np.concatenate([d_ids, l_ids], axis=1)
        dense_part, in_dense = _scores_of(ids, d_ids, d_scores)
        lexical_part, _ = _scores_of(ids, l_ids, l_scores)
        fused = weight * dense_part + (1 - weight) * lexical_part ** exponent
        # A lexical candidate already in the dense list is the same row twice: keep one copy.
        fused[:, d_ids.shape[1]:][in_dense[:, d_ids.shape[1]:]] = -np.inf
        order = np.argsort(-fused, axis=1, kind="stable")[:, :k]
        out_scores.append(np.take_along_axis(fused, order, axis=1).astype(np.float32))
        out_ids.append(np.take_along_axis(ids, order, axis=1))
    return np.vstack(out_scores), np.vstack(out_ids)


def fusion_curve(dense, lexical, measure) -> dict[tuple[float, float], tuple]:
    """``measure(ranked rows)`` of the fused ranking at every (weight, exponent) of the grid, the plain
    weighted sum (exponent 1) first, so that a tie keeps it."""
    curve = {}
    for exponent in sorted(EXPONENT_GRID, key=lambda p: p != 1.0):
        for weight in WEIGHT_GRID:
            curve[float(weight), exponent] = measure(fuse(dense, lexical, float(weight), FUSION_DEPTH, exponent)[1])
    return curve


def fit_fusion_weight(dense, lexical, gold_rows: np.ndarray, classes: np.ndarray | None = None) -> dict:
    """The weight and exponent with the best validation top-1 (then MRR), and the whole grid for the record.

    Ties keep the earlier setting of the grid: the plain weighted sum (exponent 1) is tried first.
    With ``classes`` (``Split.label_classes``) the ranked rows are compared as classes, and
    ``gold_rows`` are classes too.
    """
    def measure(ranked):
        metrics = retrieval_metrics(ranked if classes is None else classes_of(ranked, classes), gold_rows)
        return metrics["top1"], metrics["mrr"]

    curve = fusion_curve(dense, lexical, measure)
    best = max(curve, key=lambda setting: curve[setting])
    log.info("fusion weight %.2f, exponent %.2f: val top1 %.4f (dense alone %.4f, lexical alone %.4f)", *best,
             curve[best][0], curve[1.0, 1.0][0], curve[0.0, 1.0][0])
    return {"weight": best[0], "exponent": best[1], "depth": FUSION_DEPTH, "val_top1": curve[best][0],
            **by_grid(curve, best, "val_top1")}


def fit_reverse_fusion(dense, lexical, gold_sets: list[set]) -> dict:
    """The weight and exponent of label -> alias search: the best validation recall@10 (then recall@1).

    A label has several aliases, so the fit reads how many of them come back, not one top answer;
    and the two directions weigh the sides differently (TF-IDF over short aliases finds a long
    label's words where an embedding of the label matches an embedding of each alias less well),
    so the weight is fitted apart. ``gold_sets``: each label query's alias rows.
    """
    curve = fusion_curve(dense, lexical, lambda ranked: (recall_at_k(ranked, gold_sets, 10),
                                                         recall_at_k(ranked, gold_sets, 1)))
    best = max(curve, key=lambda setting: curve[setting])
    log.info("label -> alias fusion weight %.2f, exponent %.2f: val recall@10 %.4f (dense alone %.4f, lexical "
             "alone %.4f)", *best, curve[best][0], curve[1.0, 1.0][0], curve[0.0, 1.0][0])
    return {"weight": best[0], "exponent": best[1], "depth": FUSION_DEPTH, "val_recall10": curve[best][0],
            **by_grid(curve, best, "val_recall10")}


def by_grid(curve: dict, best: tuple[float, float], name: str) -> dict:
    """The record of a fit: the measure at each weight (at the best exponent), and the best at each exponent."""
    return {f"{name}_by_weight": {f"{w:.2f}": value[0] for (w, p), value in curve.items() if p == best[1]},
            f"{name}_by_exponent": {f"{p:.2f}": max(value[0] for (_, q), value in curve.items() if q == p)
                                    for p in EXPONENT_GRID}}


@dataclass
class HybridSearcher:
    """Dense and lexical searchers fused; the same interface as ``Searcher``."""

    name: str
    dense: object
    lexical: object
    weight: float
    depth: int = FUSION_DEPTH
    exponent: float = 1.0  # applied to the lexical score before weighting
    reverse: tuple[float, float] | None = None  # label -> alias (weight, exponent); None: the same as alias -> label

    def _fused(self, method: str, queries, k: int, weight: float, exponent: float):
        queries = list(queries)
        depth = max(self.depth, k)
        dense = getattr(self.dense, method)(queries, depth)
        lexical = getattr(self.lexical, method)(queries, depth)
        return fuse(dense, lexical, weight, k, exponent)

    def labels_for(self, aliases, k: int = 10):
        return self._fused("labels_for", aliases, k, self.weight, self.exponent)

    def aliases_for(self, labels, k: int = 10):
        return self._fused("aliases_for", labels, k, *(self.reverse or (self.weight, self.exponent)))
