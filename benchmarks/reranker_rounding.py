"""How far the reranker's fit moves with float rounding alone: the same code, data and seeds,
refitted on validation features that differ in their last bits.

Two machines, thread counts or batch sizes round a model's cosines and a cross-encoder's scores
differently in the last bits. LightGBM bins each feature at cut points between the values it
sees, so a value that moves across a cut changes a split, the trees after it, every out-of-fold
score, the confidence classifier fitted on them and the abstain threshold fitted on its
probabilities. This fits the reranker as ``calibrate`` does (fold seed 13), first on the features
as computed, then on copies whose every value is multiplied by 1 + 1e-6 x N(0, 1) (a seeded
draw per copy, about what float32 rounding moves), and scores each fit on the unperturbed test
features. Reported per fit and over all fits (mean, standard deviation, range): out-of-fold val
top-1, the abstain threshold and its val coverage, test top-1, and the test coverage and
precision at that threshold; for LightGBM's default rankers and for rankers without row and
column sampling (every tree sees every alias and feature).

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/reranker_rounding_<model>.json

Example:
    python benchmarks/reranker_rounding.py --model student --copies 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from harness import add_reranker_args, reranker_tables, save_results, summary

from alias_label.search.calibration import CONFIDENCE
from alias_label.search.rerank import booster_params, fit_out_of_fold, score_table

RELATIVE_NOISE = 1e-6
# name: LightGBM parameters over the role's default rankers'
VARIANTS = {"default": {}, "no row or column sampling": {"subsample": 1.0, "colsample_bytree": 1.0}}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser)
    parser.add_argument("--copies", type=int, default=8,
                        help="fits per variant: the features as computed, then perturbed copies (default: 8)")
    args = parser.parse_args(argv)
    if args.copies < 2:
        parser.error(f"--copies {args.copies}: compare at least the features as computed and one perturbed copy")
    return args


def perturbed(table, copy: int):
    """The table with every feature value times 1 + RELATIVE_NOISE x N(0, 1), drawn with seed ``copy``;
    copy 0 is the table as computed."""
    if copy == 0:
        return table
    rows, matrices, relevance, entities = table
    rng = np.random.default_rng(copy)
    noisy = [(matrix * (1 + RELATIVE_NOISE * rng.standard_normal(matrix.shape))).astype(np.float32)
             for matrix in matrices]
    return rows, noisy, relevance, entities


def one_fit(tables: dict, columns: list[str], params: dict, copy: int, target_precision: float) -> dict:
    fitted = fit_out_of_fold(perturbed(tables["val"], copy), columns, target_precision, CONFIDENCE, params=params,
                             columns_of=columns)
    test = score_table(fitted, tables["test"], columns, columns_of=columns)
    return {"val_top1": fitted["val"]["top1"], "threshold": fitted["abstain"]["threshold"],
            "val_coverage": fitted["abstain"]["val"]["coverage"], "test_top1": test["top1"],
            "test_coverage": test["abstain"]["coverage"], "test_precision": test["abstain"]["precision"]}


def main(args) -> dict:
    _, dense, _, tables, columns = reranker_tables(args.model)
    variants = {}
    for name, overrides in VARIANTS.items():
        params = {**booster_params(dense.name), **overrides}
        fits = [one_fit(tables, columns, params, copy, args.target_precision) for copy in range(args.copies)]
        variants[name] = {"params": params, "fits": fits, "summary": summary(fits)}
        spread = variants[name]["summary"]
        print(f"{name}: val coverage {spread['val_coverage']['mean']:.2%} (sd {spread['val_coverage']['std']:.2%}, "
              f"{spread['val_coverage']['min']:.2%}-{spread['val_coverage']['max']:.2%}), test coverage "
              f"{spread['test_coverage']['mean']:.2%} (sd {spread['test_coverage']['std']:.2%}) at test precision "
              f"{spread['test_precision']['min']:.2%}-{spread['test_precision']['max']:.2%}, "
              f"test top-1 {spread['test_top1']['mean']:.2%} (sd {spread['test_top1']['std']:.2%})")
    figures = {"model": args.model, "features": columns, "relative_noise": RELATIVE_NOISE, "copies": args.copies,
               "variants": variants}
    save_results(f"reranker_rounding_{Path(str(args.model)).name}", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
