"""What computing each name as it would be alone costs a batch lookup on a CPU, and what it buys.

A lookup computes each name's query embedding in a forward pass of its own, searches FAISS in
runs of fewer than 20 queries and scores each name's cross-encoder pairs as a batch of their own
(``encode_alone``, ``search_alone``, ``CrossScorer.alone``), so that a name's answers are those
it gets looked up alone. The baseline computes the batch together: ``encode`` in batches of 32,
one FAISS search of every query, the cross-encoder's pairs of every name in batches sorted by
token count, as a GPU does. Both look the test aliases up through ``load_retriever`` (the student
in int8), reranked and dense, taking turns ``--runs`` times. Reported per model and mode: each
way's fastest time and their ratio, how many aliases get another top answer, another top 10 or
another confident flag together than alone, and the largest difference in what the abstain
setting reads (reranked: the probability that the top answer is right; dense: the top score).

Reads   data/processed/, models/trained/alias_label_{teacher,student}/ with their indexes,
        calibration, reranker and cross-encoder
Writes  benchmarks/results/batch_alone.json

Example:
    python benchmarks/batch_alone.py --runs 2
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from unittest import mock

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.models.encode import encode
from alias_label.search.cross import CrossScorer
from alias_label.search.retriever import load_retriever

ROLES = ("teacher", "student")
MODES = ("rerank", "dense")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each way, taking turns (default: 2)")
    parser.add_argument("--queries", type=int, default=None, help="test aliases in the batch (default: all)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: time each way at least once")
    return args


def one_search(index, queries, k):
    """Every query in one FAISS search, whatever the number."""
    return index.search(queries, k)


@contextlib.contextmanager
def computed_together():
    """The baseline: the batch's names encoded, searched and cross-scored together."""
    with contextlib.ExitStack() as stack:
        for module in ("alias_label.search.rerank", "alias_label.search.searchers"):
            stack.enter_context(mock.patch(f"{module}.encode_alone", encode))
            stack.enter_context(mock.patch(f"{module}.search_alone", one_search))
        stack.enter_context(mock.patch.object(CrossScorer, "alone", new_callable=mock.PropertyMock,
                                              return_value=False))
        yield


def compare(retriever, aliases: list[str], runs: int) -> dict:
    ways = {"together": computed_together, "alone": contextlib.nullcontext}
    seconds, found = {way: [] for way in ways}, {}
    for _ in range(runs):
        for way, context in ways.items():
            with context():
                began = time.perf_counter()
                found[way] = retriever.labels_with_confidence(aliases, 10)
                seconds[way].append(time.perf_counter() - began)
    (_, ids_t, read_t), (_, ids_a, read_a) = found["together"], found["alone"]
    fastest = {way: min(times) for way, times in seconds.items()}
    row = {"aliases": len(aliases), "seconds": seconds, "cost": fastest["alone"] / fastest["together"],
           "top1_differs": int((ids_t[:, 0] != ids_a[:, 0]).sum()),
           "top10_differs": int((ids_t != ids_a).any(axis=1).sum()),
           "confident_differs": int((retriever.kept_by_setting(read_t) != retriever.kept_by_setting(read_a)).sum()),
           "max_confidence_diff": float(np.abs(read_t[:, 0] - read_a[:, 0]).max(initial=0.0))}
    return row


def main(args) -> dict:
    aliases = load_split().pairs("test")["alias"].tolist()[:args.queries]
    figures = {}
    for role in ROLES:
        for mode in MODES:
            row = figures[f"{role}_{mode}"] = compare(load_retriever(role, mode=mode), aliases, args.runs)
            print(f"{role} {mode}: {row['aliases']} aliases together {min(row['seconds']['together']):.1f} s, alone "
                  f"{min(row['seconds']['alone']):.1f} s ({row['cost']:.2f}x); together differs from alone in "
                  f"{row['top1_differs']} top answers, {row['top10_differs']} top 10s, {row['confident_differs']} "
                  f"confident flags")
    save_results("batch_alone", {"runs": args.runs, **figures}, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
