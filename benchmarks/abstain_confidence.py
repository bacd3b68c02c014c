"""Whether a classifier of the top answer's correctness abstains better than its share and margin.

The reranked abstain keeps a top answer when its share of the query's reranker scores clears a
threshold and beats the runner-up's by a margin (docs/rerank.md). A second model, fitted to say
whether the top answer is right from the top candidate's features, its share, margin and raw
scores, might order the answers better. It stays out of fold like the reranker: the reranker's
out-of-fold validation scores feed a LightGBM classifier fitted in entity folds of its own, whose
out-of-fold probabilities fit the threshold (with the same lower confidence bound); the fold
classifiers' mean scores test.

Reported per fold seed and per method: the validation coverage of the fitted setting, its test
coverage and precision, and on each split the ceiling, the largest share of aliases whose best
answers by that method's score are still right at the target precision (what a perfect choice
of threshold would keep there).

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/abstain_confidence_<model>.json

Example:
    python benchmarks/abstain_confidence.py --model student --seeds 13 21
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from harness import add_reranker_args, reranker_tables, save_results

from alias_label.search.abstain import abstain_quality, fit_abstain
from alias_label.search.calibration import CONFIDENCE
from alias_label.search.rerank import (
    FOLDS,
    REPEATS,
    booster_params,
    entity_folds,
    fit_out_of_fold,
    mean_raw,
    ranked_outcome,
    shares,
    top_shares,
)

CLASSIFIER_PARAMS = {"objective": "binary", "n_estimators": 150, "learning_rate": 0.05, "num_leaves": 7,
                     "min_child_samples": 20, "subsample": 0.8, "subsample_freq": 1, "colsample_bytree": 0.8,
                     "verbose": -1, "n_jobs": 1}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser, seeds=True)
    return parser.parse_args(argv)


def top_answer_features(raw: list[np.ndarray], matrices: list[np.ndarray], temperature: float) -> np.ndarray:
    """Per alias: its top share, share margin, top raw score, raw margin and candidate count, then
    the top candidate's features (NaN where the alias has no candidate)."""
    width = max((m.shape[1] for m in matrices), default=0)
    out = np.full((len(raw), 5 + width), np.nan, dtype=np.float32)
    for i, (scores, matrix) in enumerate(zip(raw, matrices, strict=True)):
        if not len(scores):
            continue
        order = np.argsort(-scores, kind="stable")
        share = np.sort(shares(scores, temperature))[::-1]
        runner_up = (share[1], scores[order[1]]) if len(order) > 1 else (0.0, np.nan)
        out[i, :5] = [share[0], share[0] - runner_up[0], scores[order[0]], scores[order[0]] - runner_up[1],
                      len(scores)]
        out[i, 5:] = matrix[order[0]]
    return out


def classifier_out_of_fold(features: np.ndarray, right: np.ndarray, entities: np.ndarray,
                           seed: int) -> tuple[np.ndarray, list]:
    """Out-of-fold probabilities that the top answer is right, and the fold classifiers."""
    import lightgbm

    fold = entity_folds(entities, min(FOLDS, len(set(entities))), seed)
    probability, models = np.zeros(len(features)), []
    for f in np.unique(fold):
        inside = fold != f
        model = lightgbm.LGBMClassifier(**CLASSIFIER_PARAMS, random_state=seed + int(f))
        models.append(model.fit(features[inside], right[inside]))
        probability[~inside] = model.predict_proba(features[~inside])[:, 1]
    return probability, models


def ceiling(confidence: np.ndarray, right: np.ndarray, target_precision: float) -> float:
    """The largest share of aliases whose most confident answers are right at the target precision."""
    order = np.argsort(-confidence, kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    met = np.flatnonzero(precision >= target_precision)
    return float((met[-1] + 1) / len(order)) if len(met) else 0.0


def as_scores(probability: np.ndarray) -> np.ndarray:
    """A probability as abstain scores with no runner-up to beat (margin 0 keeps them all)."""
    return np.c_[probability, np.zeros_like(probability)].astype(np.float32)


def one_seed(tables: dict, columns: list[str], seed: int, target_precision: float, params: dict) -> dict:
    val, test = tables["val"], tables["test"]
    fitted = fit_out_of_fold(val, columns, target_precision, CONFIDENCE, seed=seed, params=params, columns_of=columns)
    raw_test = mean_raw(fitted["boosters"], test[1], list(range(len(columns))))
    right_val, right_test = fitted["right"], ranked_outcome(raw_test, test[2])[1]
    temperature = fitted["temperature"]
    share_test = top_shares(raw_test, temperature)
    methods = {"share and margin": {
        "val_coverage": fitted["abstain"]["val"]["coverage"], "met_target": fitted["abstain"]["met_target"],
        "test": abstain_quality(share_test, right_test, fitted["abstain"]),
        "val_ceiling": ceiling(top_shares(fitted["out_of_fold_raw"], temperature)[:, 0], right_val, target_precision),
        "test_ceiling": ceiling(share_test[:, 0], right_test, target_precision)}}
    probability, models = classifier_out_of_fold(top_answer_features(fitted["out_of_fold_raw"], val[1], temperature),
                                                 right_val, val[3], seed + 100)
    test_probability = np.mean([m.predict_proba(top_answer_features(raw_test, test[1], temperature))[:, 1]
                                for m in models], axis=0)
    setting = fit_abstain(as_scores(probability), right_val, target_precision, confidence=CONFIDENCE)
    methods["classifier"] = {
        "val_coverage": setting["val"]["coverage"], "met_target": setting["met_target"],
        "test": abstain_quality(as_scores(test_probability), right_test, setting),
        "val_ceiling": ceiling(probability, right_val, target_precision),
        "test_ceiling": ceiling(test_probability, right_test, target_precision)}
    return methods


def main(args) -> dict:
    _, dense, _, tables, columns = reranker_tables(args.model)
    params = booster_params(dense.name)
    fits = {seed: one_seed(tables, columns, seed, args.target_precision, params) for seed in args.seeds}
    for seed, methods in fits.items():
        for name, m in methods.items():
            print(f"seed {seed}, {name}: val coverage {m['val_coverage']:.2%} (ceiling {m['val_ceiling']:.2%}), "
                  f"test coverage {m['test']['coverage']:.2%} at precision {m['test']['precision'] or 0:.2%} "
                  f"(ceiling {m['test_ceiling']:.2%})")
    figures = {"model": args.model, "features": columns, "seeds": args.seeds,
               "target_precision": args.target_precision,
               "booster_params": params, "repeats": REPEATS,
               "classifier_params": CLASSIFIER_PARAMS, "fits": {str(seed): methods for seed, methods in fits.items()}}
    save_results(f"abstain_confidence_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
