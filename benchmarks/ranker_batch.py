"""How a batch lookup's ranking models score many aliases: one LightGBM call per alias against
one call per model over the whole batch.

A reranked batch lookup scores every alias's candidates with each of the reranker's fold models
(``alias_label.search.rerank.mean_raw``). Each LightGBM call costs a fixed setup, about what one
alias's few dozen candidates take to score, so the batch is scored in one call per model over
all its aliases' rows (``predict_each``); the baseline calls each model once per alias, as a
single lookup does. Both are timed on the test aliases' candidate features, as a batch lookup
computes them (the student in int8, each model's cross-encoder features included), taking turns
``--runs`` times; reported per model: the fastest run of each, the ratio, the largest difference
between their scores (none: a row's score does not depend on the rows beside it) and the whole
batch lookup's time for scale.

Reads   data/processed/, models/trained/alias_label_{teacher,student}/ with their indexes,
        calibration, reranker and cross-encoder
Writes  benchmarks/results/ranker_batch.json

Example:
    python benchmarks/ranker_batch.py --runs 3
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.search.rerank import mean_raw
from alias_label.search.retriever import load_retriever

ROLES = ("teacher", "student")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each way, taking turns (default: 3)")
    parser.add_argument("--queries", type=int, default=None, help="test aliases in the batch (default: all)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: time each way at least once")
    return args


def per_alias(boosters: list, matrices: list[np.ndarray], columns: list[int]) -> list[np.ndarray]:
    """The baseline: each alias's candidates scored by one call per model, as a single lookup does."""
    return [mean_raw(boosters, [matrix], columns)[0] for matrix in matrices]


def compare(retriever, aliases: list[str], runs: int) -> dict:
    searcher = retriever.searcher
    began = time.perf_counter()
    retriever.labels_with_confidence(aliases, 10)
    lookup_s = time.perf_counter() - began
    _, matrices = searcher.candidate_features(aliases)
    columns = list(range(matrices[0].shape[1]))
    ways = {"one call per alias": per_alias, "one call per model": mean_raw}
    seconds, scores = {way: [] for way in ways}, {}
    for _ in range(runs):
        for way, score in ways.items():
            began = time.perf_counter()
            scores[way] = score(searcher.boosters, matrices, columns)
            seconds[way].append(time.perf_counter() - began)
    fastest = {way: min(times) for way, times in seconds.items()}
    return {"aliases": len(aliases), "models": len(searcher.boosters),
            "candidates": int(sum(len(matrix) for matrix in matrices)), "seconds": seconds,
            "speedup": fastest["one call per alias"] / fastest["one call per model"],
            "max_abs_diff": float(max(np.abs(a - b).max(initial=0.0) for a, b in
                                      zip(scores["one call per alias"], scores["one call per model"], strict=True))),
            "batch_lookup_s": lookup_s}


def main(args) -> dict:
    aliases = load_split().pairs("test")["alias"].tolist()[:args.queries]
    figures = {}
    for role in ROLES:
        figures[role] = compare(load_retriever(role), aliases, args.runs)
        row = figures[role]
        print(f"{role}: {row['aliases']} aliases, {row['candidates']} candidates, {row['models']} models: one call "
              f"per model {min(row['seconds']['one call per model']):.2f} s, per alias "
              f"{min(row['seconds']['one call per alias']):.2f} s ({row['speedup']:.2f}x), max diff "
              f"{row['max_abs_diff']:.1e}; the whole batch lookup {row['batch_lookup_s']:.1f} s")
    save_results("ranker_batch", {"runs": args.runs, **figures}, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
