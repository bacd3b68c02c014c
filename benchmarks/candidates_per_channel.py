"""What more candidates a channel buy the reranker, and what they cost a lookup.

For each K, every first-stage channel proposes its top K labels; the reranker is refitted on the
validation aliases' candidates and features as ``calibrate`` fits it (fold seed 13, every feature,
the model's cross-encoder when it has one) and scored on test. Reported per K: out-of-fold val
and test top-1, MRR, the union's recall (the reranker's ceiling) and size, top-1 and recall by
alias kind, the abstain setting's val coverage and its test precision and coverage; then the
single-lookup p50 and p95 of the reranked search at each K, the Ks taking turns ten lookups at a
time, run as users run it (the student in int8).

Reads   data/processed/, the trained model (default: the teacher) with its indexes, calibration
        and cross-encoder
Writes  benchmarks/results/candidates_per_channel_<model>[_<tag>].json

Example:
    python benchmarks/candidates_per_channel.py --model student --ks 50 100
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import add_reranker_args, percentiles, reranker_inputs, save_results, tables_at

from alias_label.data.kinds import pair_kinds
from alias_label.data.split import load_split
from alias_label.evaluate.timing import taking_turns
from alias_label.search.calibration import CONFIDENCE
from alias_label.search.cross import has_cross_encoder, load_cross_encoder
from alias_label.search.rerank import (
    FirstStage,
    RerankSearcher,
    booster_params,
    columns_of,
    fit_out_of_fold,
    mean_raw,
    ranked_outcome,
    score_table,
)
from alias_label.search.retriever import as_hybrid, load_dense


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reranker_args(parser)
    parser.add_argument("--ks", type=int, nargs="+", default=[50, 100],
                        help="candidates each channel proposes, one refit each (default: 50 100)")
    parser.add_argument("--latency-queries", type=int, default=200,
                        help="test aliases looked up one at a time at each K (default: 200)")
    parser.add_argument("--tag", default=None,
                        help="appended to the results file's name, for a run on other data (another ALIAS_LABEL_HOME)")
    args = parser.parse_args(argv)
    if min(args.ks) < 1:
        parser.error(f"--ks {' '.join(map(str, args.ks))}: each channel proposes at least 1 candidate")
    return args


def by_kind(raw: list[np.ndarray], relevance: list[np.ndarray], kinds: np.ndarray) -> dict:
    """Top-1 and the union's recall per alias kind, from each alias's candidate scores."""
    _, right, gold_rank = ranked_outcome(raw, relevance)
    return {kind: {"top1": float(right[kinds == kind].mean()), "recall": float((gold_rank[kinds == kind] > 0).mean()),
                   "n": int((kinds == kind).sum())} for kind in np.unique(kinds)}


def refit(inputs: tuple, k: int, target_precision: float) -> tuple:
    """The reranker refitted on K candidates a channel, from ``reranker_inputs``; its figures, fitted
    models and feature columns."""
    split, dense, cross = inputs
    _, tables = tables_at(split, dense, cross, k)
    columns = columns_of(cross)
    fitted = fit_out_of_fold(tables["val"], columns, target_precision, CONFIDENCE,
                             params=booster_params(dense.name), columns_of=columns)
    test = score_table(fitted, tables["test"], columns, columns_of=columns)
    test_raw = mean_raw(fitted["boosters"], tables["test"][1], list(range(len(columns))))
    figures = {"val": fitted["val"], "test": test, "abstain": fitted["abstain"],
               "val_by_kind": by_kind(fitted["out_of_fold_raw"], tables["val"][2], pair_kinds(split.pairs("val"))),
               "test_by_kind": by_kind(test_raw, tables["test"][2], pair_kinds(split.pairs("test")))}
    return figures, fitted, columns


def searcher(user, hybrid, cross, fitted: dict, k: int, columns: list[str]) -> RerankSearcher:
    """A reranked search over K candidates a channel with the refitted models, the model run as users
    run it; ``hybrid`` lends its TF-IDF search and label -> alias lookups, ``cross`` (the model's
    cross-encoder, whose columns the refit read when it has one) scores the pairs."""
    stage = FirstStage.build(user.searcher, user.candidates, user.calibration["fusion"], k, hybrid.searcher.lexical)
    return RerankSearcher(f"k{k}", stage, fitted["boosters"], fitted["temperature"], columns, hybrid.searcher,
                          fitted["confidence"], cross)


def lookup_ms(searcher: RerankSearcher, alias: str) -> float:
    start = time.perf_counter()
    searcher.labels_for([alias], 10)
    return (time.perf_counter() - start) * 1000


def main(args) -> dict:
    rows, searchers = {}, {}
    user = load_dense(args.model, "cpu")
    hybrid = as_hybrid(user)
    cross = None
    if has_cross_encoder(user.model_dir):
        cross = load_cross_encoder(user.model_dir, user.candidates.labels["label"].to_numpy(), "cpu", None,
                                   user.int8_scheme)
    inputs = reranker_inputs(args.model)
    for k in args.ks:
        rows[k], fitted, columns = refit(inputs, k, args.target_precision)
        searchers[k] = searcher(user, hybrid, cross, fitted, k, columns)
        test = rows[k]["test"]
        print(f"K={k}: {test['mean_candidates']:.0f} candidates, val top-1 {rows[k]['val']['top1']:.2%}, "
              f"test top-1 {test['top1']:.2%} (recall {test['candidate_recall']:.2%}), abstain test precision "
              f"{test['abstain']['precision'] or 0:.2%} at coverage {test['abstain']['coverage']:.2%}")
    aliases = load_split().test["alias"].tolist()[:args.latency_queries]
    for each in searchers.values():
        for alias in aliases[:3]:
            each.labels_for([alias], 10)
    times = taking_turns(searchers, aliases, lookup_ms)
    for k in args.ks:
        rows[k]["lookup"] = percentiles(times[k])
        print(f"K={k}: single lookup p50 {rows[k]['lookup']['p50_ms']:.1f} ms")
    figures = {"model": args.model, "latency_queries": len(aliases), "ks": {str(k): row for k, row in rows.items()}}
    name = f"candidates_per_channel_{Path(str(args.model)).name}" + (f"_{args.tag}" if args.tag else "")
    save_results(name, figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
