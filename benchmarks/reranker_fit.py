"""How the reranker is fitted: which model ranks at lookup time, how many trees it has, and how many
times validation is cut into folds.

The abstain setting is fitted on the out-of-fold scores of the reranker's fold models. This asks
whether it carries over to test better when those same fold models rank at lookup time (their
mean score, the default) than when one model refitted on every validation alias does; what the
number of trees costs in quality and in prediction time; and what cutting validation into folds
several times with different seeds (the out-of-fold scores averaged over the cuts, every cut's
fold models ranking at lookup) does to the abstain setting. Each variant is fitted with several
fold seeds, since one fit of a few hundred validation aliases is noisy; reported per variant: the
mean and range over seeds of the out-of-fold val top-1, test top-1, the abstain setting's val and
test coverage and its test precision, and the time to score one alias's candidates.

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/reranker_fit_<model>.json

Example:
    python benchmarks/reranker_fit.py --model student --seeds 13 21
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import add_reranker_args, reranker_tables, save_results, summary

from alias_label.search.calibration import CONFIDENCE
from alias_label.search.rerank import (
    BOOSTER_PARAMS,
    REPEATS,
    booster_params,
    fit_boosters,
    fit_out_of_fold,
    score_table,
)

# name: (trees, learning rate, cuts into folds)
SCHEMES = {"100 trees at 0.15, 1 cut": (100, 0.15, 1), "300 trees at 0.05, 1 cut": (300, 0.05, 1),
           "30 trees at 0.15, 3 cuts": (30, 0.15, 3), "50 trees at 0.15, 3 cuts": (50, 0.15, 3),
           "100 trees at 0.15, 3 cuts": (100, 0.15, 3), "50 trees at 0.15, 5 cuts": (50, 0.15, 5),
           "100 trees at 0.15, 5 cuts": (100, 0.15, 5)}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser, seeds=True)
    return parser.parse_args(argv)


def refitted_on_all(fitted: dict, table, seed: int, params: dict) -> dict:
    """The same fit, but one model refitted on every validation alias ranks instead of the fold models."""
    _, matrices, relevance, _ = table
    return {**fitted, "boosters": [fit_boosters(matrices, relevance, list(range(matrices[0].shape[1])), seed,
                                                params)]}


def predict_ms(boosters: list, matrices: list[np.ndarray], repeats: int = 3) -> float:
    """Mean time to score one alias's candidates with every booster, as a lookup does."""
    sample = [m for m in matrices if len(m)][:50]
    start = time.perf_counter()
    for _ in range(repeats):
        for matrix in sample:
            np.mean([booster.predict(matrix) for booster in boosters], axis=0)
    return (time.perf_counter() - start) * 1000 / (repeats * len(sample))


def one_fit(tables: dict, columns: list[str], lookup_model: str, seed: int, target_precision: float,
            params: dict, repeats: int) -> dict:
    fitted = fit_out_of_fold(tables["val"], columns, target_precision, CONFIDENCE, seed=seed, params=params,
                             columns_of=columns, repeats=repeats)
    if lookup_model == "refitted on all":
        fitted = refitted_on_all(fitted, tables["val"], seed, params)
    test = score_table(fitted, tables["test"], columns, columns_of=columns)
    return {"val_top1": fitted["val"]["top1"], "test_top1": test["top1"],
            "val_coverage": fitted["abstain"]["val"]["coverage"], "test_coverage": test["abstain"]["coverage"],
            "test_precision": test["abstain"]["precision"],
            "predict_ms": predict_ms(fitted["boosters"], tables["test"][1])}


def main(args) -> dict:
    _, dense, _, tables, columns = reranker_tables(args.model)
    variants = {}
    for scheme, (n_estimators, learning_rate, repeats) in SCHEMES.items():
        params = {**BOOSTER_PARAMS, "n_estimators": n_estimators, "learning_rate": learning_rate}
        for lookup_model in ("fold models", "refitted on all"):
            name = f"{scheme}, {lookup_model}"
            fits = [one_fit(tables, columns, lookup_model, seed, args.target_precision, params, repeats)
                    for seed in args.seeds]
            variants[name] = {"fits": fits, "summary": summary(fits)}
            means = {key: value["mean"] for key, value in variants[name]["summary"].items()}
            print(f"{name}: val top-1 {means['val_top1']:.2%}, test top-1 {means['test_top1']:.2%}, coverage "
                  f"val {means['val_coverage']:.2%} test {means['test_coverage']:.2%} at test precision "
                  f"{means['test_precision']:.2%}, predict {means['predict_ms']:.2f} ms")
    figures = {"model": args.model, "features": columns, "seeds": args.seeds,
               "default_booster_params": booster_params(dense.name), "default_repeats": REPEATS,
               "variants": variants}
    save_results(f"reranker_fit_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
