"""Whether another confidence abstains better than the reranker's own, and how far each confidence
reads as the probability that the answer is right.

The reranked abstain keeps a top answer when a classifier's probability that it is right clears a
threshold (``alias_label.search.confidence``): a LightGBM classifier fitted on the reranker's
out-of-fold validation scores, in entity folds of its own, from the top answer's share, margin and
raw scores and the top candidate's features; its out-of-fold probabilities fit the threshold (with
the lower confidence bound), and the fold classifiers' mean probability scores test. Two
alternatives:

- share and margin: the top answer's share of the query's softmaxed reranker scores must clear a
  threshold and beat the runner-up's by a margin;
- calibrated probabilities: the softmax over a query's candidates and one more, "none of them",
  with the temperature and that candidate's score fitted by likelihood on the out-of-fold
  validation scores (temperature scaling, Guo et al. 2017), so that a candidate's share estimates
  the probability that it is the gold label, and the rest that the gold label is not among them.
  The top probability and its margin fit the setting as the shares do.

Reported per fold seed and per method: the validation coverage of the fitted setting, its test
coverage and precision, on each split the ceiling, the largest share of aliases whose best
answers by that method's score are still right at the target precision (what a perfect choice
of threshold would keep there), and the expected calibration error of the top answer's score
against its being right (10 equal-width bins; 0 when a score of 0.8 is right 80% of the time).

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
from alias_label.search.confidence import CLASSIFIER_PARAMS, CLASSIFIER_REPEATS, abstain_scores
from alias_label.search.rerank import (
    REPEATS,
    booster_params,
    fit_out_of_fold,
    mean_raw,
    ranked_outcome,
    table_probabilities,
    top_shares,
)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser, seeds=True)
    parser.add_argument("--classifier-repeats", type=int, default=CLASSIFIER_REPEATS,
                        help="how many times validation is cut into folds for the classifier, its out-of-fold "
                             f"probabilities averaged over the cuts (default: {CLASSIFIER_REPEATS})")
    return parser.parse_args(argv)


def padded(raw: list[np.ndarray]) -> np.ndarray:
    """Each query's candidate scores as one row, -inf past its candidates."""
    out = np.full((len(raw), max((len(r) for r in raw), default=0)), -np.inf)
    for i, scores in enumerate(raw):
        out[i, :len(scores)] = scores
    return out


def with_none(scores: np.ndarray, temperature: float, none_score: float) -> np.ndarray:
    """Softmax at ``temperature`` over each row's candidates and a last column, "none of them",
    scored ``none_score``."""
    from scipy.special import softmax

    return softmax(np.c_[scores, np.full(len(scores), none_score)] / temperature, axis=1)


def fit_probability(raw: list[np.ndarray], relevance: list[np.ndarray]) -> tuple[float, float]:
    """The temperature and "none of them" score of highest likelihood: each query's probability of
    its gold label, or of "none of them" where the gold label is not among its candidates."""
    from scipy.optimize import minimize

    scores = padded(raw)
    gold = np.zeros(scores.shape, dtype=bool)
    for i, rel in enumerate(relevance):
        gold[i, :len(rel)] = rel > 0
    found = gold.any(axis=1)

    def loss(params: np.ndarray) -> float:
        probability = with_none(scores, np.exp(params[0]), params[1])
        mass = np.where(found, (probability[:, :-1] * gold).sum(axis=1), probability[:, -1])
        return float(-np.mean(np.log(np.maximum(mass, 1e-12))))

    start = np.array([0.0, float(np.median([r.max() for r in raw if len(r)]))])
    best = minimize(loss, start, method="Nelder-Mead").x
    return float(np.exp(best[0])), float(best[1])


def top_probabilities(raw: list[np.ndarray], temperature: float, none_score: float) -> np.ndarray:
    """Each query's two highest candidate probabilities (0 where it has no such candidate)."""
    probability = np.sort(with_none(padded(raw), temperature, none_score)[:, :-1], axis=1)[:, ::-1]
    top = np.zeros((len(raw), 2), dtype=np.float32)
    top[:, :min(2, probability.shape[1])] = probability[:, :2]
    return top


def calibration_error(confidence: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the mean gap, weighted by bin size, between a bin's mean
    confidence and how often its answers are right."""
    which = np.minimum((np.asarray(confidence, dtype=np.float64) * bins).astype(int), bins - 1)
    return float(sum(np.mean(which == b) * abs(confidence[which == b].mean() - right[which == b].mean())
                     for b in np.unique(which)))


def ceiling(confidence: np.ndarray, right: np.ndarray, target_precision: float) -> float:
    """The largest share of aliases whose most confident answers are right at the target precision."""
    order = np.argsort(-confidence, kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    met = np.flatnonzero(precision >= target_precision)
    return float((met[-1] + 1) / len(order)) if len(met) else 0.0


def judged(setting: dict, val: np.ndarray, right_val: np.ndarray, test: np.ndarray, right_test: np.ndarray,
           target_precision: float) -> dict:
    """A confidence's abstain setting, fitted on validation, and its scores judged on both splits.
    ``val`` and ``test``: each alias's top score and runner-up's (``fit_abstain``'s input)."""
    return {"val_coverage": setting["val"]["coverage"], "met_target": setting["met_target"],
            "test": abstain_quality(test, right_test, setting),
            "val_ceiling": ceiling(val[:, 0], right_val, target_precision),
            "test_ceiling": ceiling(test[:, 0], right_test, target_precision),
            "val_calibration_error": calibration_error(val[:, 0], right_val),
            "test_calibration_error": calibration_error(test[:, 0], right_test)}


def one_seed(tables: dict, columns: list[str], seed: int, target_precision: float, params: dict,
             classifier_repeats: int) -> dict:
    val, test = tables["val"], tables["test"]
    fitted = fit_out_of_fold(val, columns, target_precision, CONFIDENCE, seed=seed, params=params, columns_of=columns,
                             classifier_repeats=classifier_repeats)
    every = list(range(len(columns)))
    raw_test = mean_raw(fitted["boosters"], test[1], every)
    right_val, right_test = fitted["right"], ranked_outcome(raw_test, test[2])[1]
    temperature = fitted["temperature"]
    methods = {"share and margin": judged(fitted["share_abstain"], top_shares(fitted["out_of_fold_raw"], temperature),
                                          right_val, top_shares(raw_test, temperature), right_test,
                                          target_precision),
               "classifier": judged(fitted["abstain"], abstain_scores(fitted["probability"]), right_val,
                                    abstain_scores(table_probabilities(fitted, test[1], every, raw_test)), right_test,
                                    target_precision)}
    methods["calibrated probability"] = calibrated_method(fitted["out_of_fold_raw"], val[2], right_val, raw_test,
                                                          right_test, target_precision)
    return methods


def calibrated_method(raw_val: list[np.ndarray], relevance_val: list[np.ndarray], right_val: np.ndarray,
                      raw_test: list[np.ndarray], right_test: np.ndarray, target_precision: float) -> dict:
    """The abstain setting on calibrated top probabilities and margins, fitted on validation."""
    temperature, none_score = fit_probability(raw_val, relevance_val)
    top_val = top_probabilities(raw_val, temperature, none_score)
    top_test = top_probabilities(raw_test, temperature, none_score)
    setting = fit_abstain(top_val, right_val, target_precision, confidence=CONFIDENCE)
    return {"temperature": temperature, "none_score": none_score,
            **judged(setting, top_val, right_val, top_test, right_test, target_precision)}


def main(args) -> dict:
    _, dense, _, tables, columns = reranker_tables(args.model)
    params = booster_params(dense.name)
    fits = {seed: one_seed(tables, columns, seed, args.target_precision, params, args.classifier_repeats)
            for seed in args.seeds}
    for seed, methods in fits.items():
        for name, m in methods.items():
            print(f"seed {seed}, {name}: val coverage {m['val_coverage']:.2%} (ceiling {m['val_ceiling']:.2%}), "
                  f"test coverage {m['test']['coverage']:.2%} at precision {m['test']['precision'] or 0:.2%} "
                  f"(ceiling {m['test_ceiling']:.2%}), calibration error val {m['val_calibration_error']:.3f} "
                  f"test {m['test_calibration_error']:.3f}")
    figures = {"model": args.model, "features": columns, "seeds": args.seeds,
               "target_precision": args.target_precision,
               "booster_params": params, "repeats": REPEATS,
               "classifier_params": CLASSIFIER_PARAMS, "classifier_repeats": args.classifier_repeats,
               "fits": {str(seed): methods for seed, methods in fits.items()}}
    save_results(f"abstain_confidence_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
