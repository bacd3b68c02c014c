"""How strict the abstain setting's lower confidence bound must be for its precision to hold on test.

The abstain setting is the threshold on the probability that the top answer is right (the
reranker's confidence classifier, ``alias_label.search.confidence``), among a hundred candidates,
that keeps the most validation aliases while the lower confidence bound of their validation
precision clears the target (``alias_label.search.calibration.CONFIDENCE``). The setting chosen is
the one whose validation precision the noise flattered most, so a bound at a higher confidence
trades validation coverage for test precision. This fits the reranker and its classifier as
``calibrate`` does, once per fold seed, then fits the threshold on the same out-of-fold validation
probabilities at each confidence, and
reports per confidence the validation and test coverage, whether the bound met the target, and
the test precision with its 95% Wilson interval. Run it on other draws of the held-out entities
too (``prepare_data.py --split-seed`` or ``--test-first``, in their own ``ALIAS_LABEL_HOME``):
one test split is one draw.

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/abstain_bound_<model>[_<tag>].json

Example:
    python benchmarks/abstain_bound.py --model student --confidences 0.9 0.975
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from harness import add_reranker_args, reranker_tables, save_results

from alias_label.search.abstain import abstain_quality, fit_abstain, precision_interval
from alias_label.search.calibration import CONFIDENCE
from alias_label.search.confidence import abstain_scores
from alias_label.search.rerank import booster_params, fit_out_of_fold, mean_raw, ranked_outcome, table_probabilities


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser, seeds=True)
    parser.add_argument("--confidences", type=float, nargs="+", default=[0.9, 0.95, 0.975, 0.99],
                        help="one-sided confidences of the lower bound to fit at (default: 0.9 0.95 0.975 0.99)")
    parser.add_argument("--tag", default=None,
                        help="appended to the results file's name, for a run on another draw of the split")
    return parser.parse_args(argv)


def bound_fits(probability_val: np.ndarray, right_val: np.ndarray, probability_test: np.ndarray,
               right_test: np.ndarray, confidences: list[float], target_precision: float) -> list[dict]:
    """The abstain threshold fitted on the validation probabilities at each confidence, and how it does on test."""
    rows = []
    for confidence in confidences:
        abstain = fit_abstain(abstain_scores(probability_val), right_val, target_precision, confidence=confidence,
                              margin=False)
        test = abstain_quality(abstain_scores(probability_test), right_test, abstain)
        correct = int(round((test["precision"] or 0.0) * test["kept"]))
        rows.append({"confidence": confidence, "threshold": abstain["threshold"], "met_target": abstain["met_target"],
                     "val_coverage": abstain["val"]["coverage"], "val_precision": abstain["val"]["precision"],
                     "test_coverage": test["coverage"], "test_precision": test["precision"],
                     "test_interval": precision_interval(correct, test["kept"])})
    return rows


def one_seed(tables: dict, columns: list[str], seed: int, params: dict, confidences: list[float],
             target_precision: float) -> dict:
    fitted = fit_out_of_fold(tables["val"], columns, target_precision, CONFIDENCE, seed=seed, params=params,
                             columns_of=columns)
    _, matrices, relevance, _ = tables["test"]
    every = list(range(len(columns)))
    raw_test = mean_raw(fitted["boosters"], matrices, every)
    _, right_test, _ = ranked_outcome(raw_test, relevance)
    return {"seed": seed, "val_top1": float(fitted["right"].mean()), "test_top1": float(right_test.mean()),
            "fits": bound_fits(fitted["probability"], fitted["right"],
                               table_probabilities(fitted, matrices, every, raw_test), right_test, confidences,
                               target_precision)}


def summary(seeds: list[dict], confidences: list[float], target_precision: float) -> dict:
    """Per confidence: the mean and range over seeds of each figure, in how many seeds the bound met
    the target on validation, and in how many the test precision reached it."""
    out = {}
    for i, confidence in enumerate(confidences):
        fits = [seed["fits"][i] for seed in seeds]
        row = {"met_on_val": sum(fit["met_target"] for fit in fits),
               "held_on_test": sum((fit["test_precision"] or 0.0) >= target_precision for fit in fits)}
        for key in ("val_coverage", "test_coverage", "test_precision"):
            values = [fit[key] for fit in fits if fit[key] is not None]
            row[key] = ({"mean": float(np.mean(values)), "min": float(np.min(values)), "max": float(np.max(values))}
                        if values else None)
        out[str(confidence)] = row
    return out


def main(args) -> dict:
    split, dense, _, tables, columns = reranker_tables(args.model)
    params = booster_params(dense.name)
    seeds = [one_seed(tables, columns, seed, params, args.confidences, args.target_precision) for seed in args.seeds]
    rows = summary(seeds, args.confidences, args.target_precision)
    for confidence, row in rows.items():
        precision = row["test_precision"]
        print(f"bound at {float(confidence):.1%}: met on val in {row['met_on_val']} of {len(seeds)}, coverage val "
              f"{row['val_coverage']['mean']:.2%} test {row['test_coverage']['mean']:.2%}, test precision "
              + (f"{precision['mean']:.2%} ({precision['min']:.2%}-{precision['max']:.2%})" if precision
                 else "none (nothing kept)") + f", at the target in {row['held_on_test']} of {len(seeds)}")
    figures = {"model": args.model, "split": {key: split.meta[key] for key in ("val_frac", "test_frac", "pairs")},
               "default_confidence": CONFIDENCE, "target_precision": args.target_precision, "seeds": seeds,
               "summary": rows}
    name = f"abstain_bound_{Path(str(args.model)).name}" + (f"_{args.tag}" if args.tag else "")
    save_results(name, figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
