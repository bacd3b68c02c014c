"""Where a reranked lookup's time goes on this CPU: each stage's time and share, teacher and student.

Each held-out alias is looked up alone through ``load_retriever``'s default search (reranked,
the student in int8 on a CPU), as the lookup script runs it, with each stage timed where the
lookup runs it: encoding the alias, the TF-IDF vectors and search, the dense search, the acronym
channel, the union of the channels, the exact cosines, the pair features, the cross-encoder, the
ranking models and the confidence classifiers; "other" is the rest of the lookup (sorting, shares,
bookkeeping). Each stage's share of the lookups' summed time is steadier than its milliseconds on
a machine whose speed drifts, and it says which part a faster lookup would have to cut.

Reads   data/processed/, models/trained/alias_label_{teacher,student}/ with their indexes,
        calibration, reranker and cross-encoder
Writes  benchmarks/results/rerank_latency.json

Example:
    python benchmarks/rerank_latency.py --queries 300
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
from harness import percentiles, save_results, single_lookup_args

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.search import rerank
from alias_label.search.retriever import load_retriever

ROLES = ("teacher", "student")


def parse_args(argv=None) -> argparse.Namespace:
    return single_lookup_args(__doc__, argv)


def stage_targets(searcher) -> list[tuple[object, str, str]]:
    """(owner, attribute, stage) of each stage of a RerankSearcher's lookup: what ``stage_clocks`` times."""
    first = searcher.first_stage
    targets = [(rerank, "encode_alone", "encode"), (first.tfidf, "vectors", "tfidf_vectors"),
               (first.lexical.label_index, "search", "tfidf_search"), (first.label_index, "search", "dense_search"),
               (first.acronym, "search", "acronym"), (rerank, "union", "union"), (first, "cosines", "cosines"),
               (rerank, "pair_features", "pair_features"), (rerank, "mean_raw", "rankers"),
               (rerank, "probabilities", "classifiers")]
    if searcher.cross is not None:
        targets.append((searcher.cross, "extend", "cross_encoder"))
    return targets


@contextlib.contextmanager
def stage_clocks(searcher, seconds: dict):
    """While inside, each stage of ``searcher``'s lookups adds its time to ``seconds[stage]``; the
    stages are as they were afterwards. Yields the stages' names."""
    def clocked(function, stage):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - start
        return timed

    # An instance's method is shadowed by an attribute of the instance, then uncovered again; a
    # module's function is put back.
    patched = [(owner, name, stage, name in vars(owner), getattr(owner, name))
               for owner, name, stage in stage_targets(searcher)]
    for owner, name, stage, _, original in patched:
        setattr(owner, name, clocked(original, stage))
    try:
        yield [stage for _, _, stage, _, _ in patched]
    finally:
        for owner, name, _, own, original in patched:
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def profile(retriever, aliases: list[str]) -> dict:
    """p50/p95 of the whole lookup and of each stage, each stage's share of the summed lookup time."""
    for alias in aliases[:5]:  # warm-up
        retriever.labels_with_confidence([alias], 10)
    lookups, stages = [], []
    seconds: dict = {}
    with stage_clocks(retriever.searcher, seconds) as names:
        for alias in aliases:
            seconds.clear()
            start = time.perf_counter()
            retriever.labels_with_confidence([alias], 10)
            lookups.append((time.perf_counter() - start) * 1000)
            stages.append({stage: value * 1000 for stage, value in seconds.items()})
    times = {stage: np.array([row.get(stage, 0.0) for row in stages]) for stage in names}
    times["other"] = np.array(lookups) - sum(times.values())
    total = float(np.sum(lookups))
    return {"lookup": percentiles(lookups),
            "stages": {stage: {**percentiles(values), "share": float(values.sum() / total)}
                       for stage, values in times.items()}}


def report(role: str, figures: dict) -> None:
    print(f"{role}: lookup p50 {figures['lookup']['p50_ms']:.2f} ms")
    for stage, row in sorted(figures["stages"].items(), key=lambda item: -item[1]["share"]):
        print(f"  {stage:14s} p50 {row['p50_ms']:6.2f} ms  {row['share']:6.1%}")


def main(args: argparse.Namespace) -> dict:
    aliases = load_split().pairs("test")["alias"].tolist()[:args.queries]
    figures = {"queries": len(aliases)}
    for role in ROLES:
        retriever = load_retriever(role)
        figures[role] = {"int8": retriever.int8_scheme is not None, **profile(retriever, aliases)}
        report(role, figures[role])
    save_results("rerank_latency", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
