"""Calibrated abstain, after S2AFF: a top match is confident when its score clears a threshold and
beats the runner-up by a margin, both picked on validation for a target precision.
"""

from __future__ import annotations

import numpy as np


def margins(scores: np.ndarray) -> np.ndarray:
    """Top-1 score minus the runner-up's; infinite when there is no runner-up."""
    if scores.shape[1] < 2:
        return np.full(len(scores), np.inf)
    return scores[:, 0] - scores[:, 1]


# What a fit's log says of a setting that missed its target: lookups then flag only a query that is its label.
TARGET_MISSED = " (target not met: in this mode only a query that is its label as written is flagged confident)"


def confident(scores: np.ndarray, abstain: dict | None) -> np.ndarray:
    """Which top-1 matches clear the calibrated threshold and margin."""
    if not abstain:
        return np.ones(len(scores), dtype=bool)
    return (scores[:, 0] >= abstain["threshold"]) & (margins(scores) >= abstain["margin"])


def rounded(score: float, digits: int, top: float = 1.0) -> float:
    """``score`` rounded to ``digits`` decimals, or to as many more (up to 6) as keep a score below
    ``top`` below it. A fitted setting can ask for a share within a hair of 1: a share of 0.99997
    shown as 1 beside "not confident" would read as a contradiction."""
    for places in range(digits, digits + 7):
        value = round(score, places)
        if score >= top or value < top:
            break
    return value


def abstain_quality(scores: np.ndarray, correct: np.ndarray, abstain: dict, also_kept: np.ndarray | None = None
                    ) -> dict:
    """Precision of the matches kept and the fraction kept (coverage); ``also_kept`` adds matches
    kept whatever their scores (``Retriever.exact_label_answers``)."""
    kept = confident(scores, abstain)
    if also_kept is not None:
        kept = kept | also_kept
    precision = float(correct[kept].mean()) if kept.any() else None
    return {"precision": precision, "coverage": float(kept.mean()), "kept": int(kept.sum()), "n": int(len(kept))}


def precision_lower_bound(correct: int, kept: int, confidence: float) -> float:
    """One-sided Wilson lower bound of a precision of ``correct`` of ``kept`` at ``confidence``."""
    from statistics import NormalDist

    if kept == 0:
        return 0.0
    z = NormalDist().inv_cdf(confidence)
    p = correct / kept
    centre = p + z * z / (2 * kept)
    spread = z * np.sqrt(p * (1 - p) / kept + z * z / (4 * kept * kept))
    return float((centre - spread) / (1 + z * z / kept))


def precision_interval(correct: int, kept: int, confidence: float = 0.95) -> list[float] | None:
    """Two-sided Wilson interval [low, high] of a precision; None when nothing was kept."""
    if kept == 0:
        return None
    tail = (1 + confidence) / 2
    return [precision_lower_bound(correct, kept, tail), 1 - precision_lower_bound(kept - correct, kept, tail)]


def fit_abstain(scores: np.ndarray, correct: np.ndarray, target_precision: float, min_kept: int = 10,
                confidence: float | None = None, margin: bool = True) -> dict:
    """The threshold and margin with the highest coverage whose validation precision meets the target.

    Candidates are quantiles of the top-1 scores and of the margins. With fewer than ``min_kept``
    matches kept, a precision is too noisy to trust, so such settings are skipped (a smaller
    validation set lowers that floor to its size). With ``confidence`` (say 0.9), the target must
    be met by the lower confidence bound of the validation precision, not by the precision
    itself: a safety margin for aliases the fit never saw. If no setting reaches the target, the
    most precise one is returned with ``met_target`` false. With ``margin`` False, only the
    threshold is fitted (the margin stays 0), for a score that already weighs the runner-up.
    """
    min_kept = max(1, min(min_kept, len(scores)))
    gaps = margins(scores)
    thresholds = np.unique(np.quantile(scores[:, 0], np.linspace(0, 1, 101)))
    finite = gaps[np.isfinite(gaps)]
    margin_grid = np.unique(np.concatenate([[0.0], np.quantile(finite, np.linspace(0, 0.95, 39))])) \
        if margin and len(finite) else np.zeros(1)
    best, best_key = None, None
    for threshold in thresholds:
        for gap in margin_grid:
            setting = {"threshold": float(threshold), "margin": float(gap)}
            quality = abstain_quality(scores, correct, setting)
            if quality["kept"] < min_kept:
                continue
            precision = quality["precision"] if confidence is None else precision_lower_bound(
                int(round(quality["precision"] * quality["kept"])), quality["kept"], confidence)
            met = precision >= target_precision
            key = (met, quality["coverage"] if met else precision)
            if best_key is None or key > best_key:
                best, best_key = {**setting, "met_target": met, "val": quality}, key
    return {**best, "target_precision": target_precision, "confidence": confidence}
