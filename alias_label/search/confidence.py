"""How sure the reranker is of its top answer: a classifier's probability that the answer is right.

The reranker's scores order one alias's candidates; how far the top one stands out (its share of
the softmaxed scores, its margin to the runner-up) says something about whether it is right, but
a share of 0.9 is not right 90% of the time. A LightGBM classifier reads the top answer's share,
share margin, raw score, raw margin and candidate count, and the top candidate's own features, and
says how likely the answer is right. It is fitted as the reranker is, out of fold: on the
reranker's out-of-fold validation scores, in entity folds of its own, so each validation alias's
probability comes from classifiers that did not see its entity (validation cut into folds
``CLASSIFIER_REPEATS`` times, the probabilities averaged over the cuts); those out-of-fold probabilities
alone fit the abstain threshold. At lookup time the fold classifiers' mean probability is what the
threshold reads (docs/rerank.md).
"""

from __future__ import annotations

import json

import numpy as np

from alias_label.search.abstain import fit_abstain
from alias_label.search.folds import entity_folds, shares

CLASSIFIER_PARAMS = {"objective": "binary", "n_estimators": 150, "learning_rate": 0.05, "num_leaves": 7,
                     "min_child_samples": 20, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                     "verbose": -1, "n_jobs": 1}
SUMMARY = ["share", "share_margin", "raw", "raw_margin", "candidates"]  # then the top candidate's features
SEED_OFFSET = 100  # the classifiers' fold cuts are not the reranker's: their seeds differ by this
# Validation is cut into folds this many times for the classifiers too, their out-of-fold
# probabilities averaged over the cuts: one cut's threshold swings with its seed (docs/rerank.md).
CLASSIFIER_REPEATS = 3


def top_answer_features(raw: list[np.ndarray], matrices: list[np.ndarray], temperature: float) -> np.ndarray:
    """Per alias: ``SUMMARY`` of its reranker scores, then its top candidate's features (NaN where
    the alias has no candidate, or no runner-up for the margins)."""
    width = max((m.shape[1] for m in matrices), default=0)
    out = np.full((len(raw), len(SUMMARY) + width), np.nan, dtype=np.float32)
    for i, (scores, matrix) in enumerate(zip(raw, matrices, strict=True)):
        if not len(scores):
            continue
        order = np.argsort(-scores, kind="stable")
        share = np.sort(shares(scores, temperature))[::-1]
        runner_up = (share[1], scores[order[1]]) if len(order) > 1 else (0.0, np.nan)
        out[i, :len(SUMMARY)] = [share[0], share[0] - runner_up[0], scores[order[0]],
                                 scores[order[0]] - runner_up[1], len(scores)]
        out[i, len(SUMMARY):] = matrix[order[0]]
    return out


def classifier_out_of_fold(features: np.ndarray, right: np.ndarray, entities: np.ndarray, folds: int,
                           seed: int) -> tuple[np.ndarray, list]:
    """Out-of-fold probabilities that each top answer is right, and the fold classifiers' boosters.

    LightGBM's own ``train`` fits them, not its scikit-learn wrapper: a fold whose answers are all
    right would be one class to the wrapper, encoded as 0, and read as never right.
    """
    import lightgbm

    fold = entity_folds(entities, min(folds, len(set(entities))), seed)
    probability, boosters = np.zeros(len(features)), []
    for f in np.unique(fold):
        inside = fold != f
        data = lightgbm.Dataset(features[inside], label=right[inside].astype(np.float64))
        boosters.append(lightgbm.train({**CLASSIFIER_PARAMS, "seed": seed + int(f)}, data))
        probability[~inside] = boosters[-1].predict(features[~inside])
    return probability, boosters


def probabilities(boosters: list, features: np.ndarray) -> np.ndarray:
    """The fold classifiers' mean probability that each top answer is right."""
    if not len(features):
        return np.zeros(0)
    return np.mean([booster.predict(features) for booster in boosters], axis=0)


def abstain_scores(probability: np.ndarray) -> np.ndarray:
    """Probabilities as the (top, runner-up) scores the abstain setting reads; it reads no margin."""
    return np.c_[probability, np.zeros_like(probability)].astype(np.float32)


def fit_confidence(raw: list[np.ndarray], matrices: list[np.ndarray], right: np.ndarray, entities: np.ndarray,
                   temperature: float, target_precision: float, confidence: float, folds: int,
                   seed: int, repeats: int = CLASSIFIER_REPEATS) -> dict:
    """The fold classifiers of ``repeats`` cuts into folds, fitted on the reranker's out-of-fold
    scores, and the abstain threshold fitted on their out-of-fold probabilities, averaged over the
    cuts (each alias's from the classifier of each cut that did not see its entity)."""
    features = top_answer_features(raw, matrices, temperature)
    probability, boosters = np.zeros(len(features)), []
    for repeat in range(repeats):
        cut, cut_boosters = classifier_out_of_fold(features, right, entities, folds,
                                                   seed + SEED_OFFSET + repeat * folds)
        probability += cut / repeats
        boosters += cut_boosters
    abstain = fit_abstain(abstain_scores(probability), right, target_precision, confidence=confidence, margin=False)
    return {"boosters": boosters, "probability": probability, "abstain": {**abstain, "reads": "probability"}}


def boosters_text(boosters: list) -> str:
    return json.dumps([booster.model_to_string() for booster in boosters])


def boosters_from_text(text: str) -> list:
    import lightgbm

    return [lightgbm.Booster(model_str=model) for model in json.loads(text)]
