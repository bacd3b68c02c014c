"""What each feature group of the reranker is worth: the reranker refitted without it.

The first stage's candidates and every feature are computed once for the validation and test
aliases; then the reranker is refitted on validation (entity folds, out-of-fold temperature and
abstain, as ``calibrate`` fits it) with all features and with each group left out, and scored on
test. Reported per variant: out-of-fold val top-1, test top-1 and MRR, and the test precision and
coverage of the abstain setting fitted on validation; plus the single-lookup p50 of the full
reranked search, and the hybrid's figures on the same aliases for comparison. The features come
from the model in float32, as ``calibrate`` computes them; the lookups run it as users do (the
student in int8).

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/rerank_ablation_<model>[_<tag>].json

Example:
    python benchmarks/rerank_ablation.py --model student
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import add_reranker_args, percentiles, reranker_tables, save_results

from alias_label.search.calibration import CONFIDENCE
from alias_label.search.cross import CROSS_FEATURES
from alias_label.search.features import GROUPS
from alias_label.search.rerank import booster_params, fit_out_of_fold, score_table
from alias_label.search.retriever import as_hybrid, as_rerank, load_dense
from alias_label.search.scoring import score_split


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser)
    parser.add_argument("--latency-queries", type=int, default=100, help="single lookups timed (default: 100)")
    parser.add_argument("--tag", default=None,
                        help="appended to the results file's name, for a run on other data (another ALIAS_LABEL_HOME)")
    return parser.parse_args(argv)


def variants(columns: list[str]) -> dict[str, list[str]]:
    """Every column, then every column but one group's: the first stage's groups, and the
    cross-encoder's when the model has one."""
    groups = {**GROUPS, **({"cross-encoder": CROSS_FEATURES} if CROSS_FEATURES[0] in columns else {})}
    return {"all": columns, **{f"without {group}": [f for f in columns if f not in names]
                               for group, names in groups.items()}}


def single_lookup_p50(retriever, aliases: list[str]) -> float:
    for alias in aliases[:3]:
        retriever.labels_for([alias], 10)
    times = []
    for alias in aliases:
        start = time.perf_counter()
        retriever.labels_for([alias], 10)
        times.append((time.perf_counter() - start) * 1000)
    return percentiles(times)["p50_ms"]


def main(args) -> dict:
    split, float32_dense, stage, tables, columns = reranker_tables(args.model)
    role = float32_dense.name
    rows = {}
    for name, features in variants(columns).items():
        fitted = fit_out_of_fold(tables["val"], features, args.target_precision, CONFIDENCE,
                                 params=booster_params(role), columns_of=columns)
        test = score_table(fitted, tables["test"], features, columns_of=columns)
        rows[name] = {"val": fitted["val"], "test": test, "abstain": fitted["abstain"]}
        print(f"{name}: val top-1 {fitted['val']['top1']:.2%}, test top-1 {test['top1']:.2%}, test precision "
              f"{test['abstain']['precision'] or 0:.2%} at coverage {test['abstain']['coverage']:.2%}")
    aliases = split.test["alias"].tolist()[:args.latency_queries]
    # Lookups run the model as users do (the student in int8), the refits above on float32 features.
    dense = load_dense(args.model, "cpu")
    hybrid = as_hybrid(dense)
    figures = {"model": args.model, "candidates_per_channel": stage.k, "variants": rows,
               "hybrid": {part: score_split(hybrid, split, part)[0] for part in ("val", "test")},
               "p50_ms": {"rerank": single_lookup_p50(as_rerank(dense), aliases),
                          "hybrid": single_lookup_p50(hybrid, aliases)}}
    p50 = figures["p50_ms"]
    print(f"single lookup p50: rerank {p50['rerank']:.1f} ms, hybrid {p50['hybrid']:.1f} ms")
    name = f"rerank_ablation_{Path(str(args.model)).name}" + (f"_{args.tag}" if args.tag else "")
    save_results(name, figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
