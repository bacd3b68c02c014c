"""What ``Retriever.lookup`` adds to the search it runs: the table a user gets, against the bare search.

A single lookup through the Python API, the lookup script or the service is the reranked search
(``labels_with_confidence``, what the evaluator times) plus reading the query, flagging the
confident answer and building the table of matches. Each test alias is looked up alone both ways,
taking turns ten aliases at a time, through ``load_retriever``'s default search (reranked; the
student in int8 on a CPU); the p50 of each and the lookup's extra milliseconds are reported.

Reads   data/processed/, models/trained/alias_label_{teacher,student}/ with their indexes,
        calibration, reranker and cross-encoder
Writes  benchmarks/results/lookup_overhead.json

Example:
    python benchmarks/lookup_overhead.py --queries 300
"""

from __future__ import annotations

import argparse

from harness import percentiles, save_results, single_lookup_args, timed_ms

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.evaluate.timing import taking_turns
from alias_label.search.retriever import load_retriever

ROLES = ("teacher", "student")
K = 5


def parse_args(argv=None) -> argparse.Namespace:
    return single_lookup_args(__doc__, argv)


def profile(retriever, aliases: list[str]) -> dict:
    """p50/p95 of the bare search and of the lookup, taking turns, and the lookup's extra p50."""
    ways = {"search": lambda alias: retriever.labels_with_confidence([alias], K),
            "lookup": lambda alias: retriever.lookup([alias], k=K)}
    for alias in aliases[:5]:  # warm-up, the lookup's first call included
        for way in ways.values():
            way(alias)
    times = taking_turns(ways, aliases, lambda way, alias: timed_ms(way, alias)[0])
    figures = {name: percentiles(values) for name, values in times.items()}
    figures["extra_p50_ms"] = figures["lookup"]["p50_ms"] - figures["search"]["p50_ms"]
    figures["ratio_p50"] = figures["lookup"]["p50_ms"] / figures["search"]["p50_ms"]
    return figures


def main(args: argparse.Namespace) -> dict:
    aliases = load_split().pairs("test")["alias"].tolist()[:args.queries]
    figures = {"queries": len(aliases), "k": K}
    for role in ROLES:
        figures[role] = profile(load_retriever(role), aliases)
        row = figures[role]
        print(f"{role}: search p50 {row['search']['p50_ms']:.2f} ms, lookup p50 {row['lookup']['p50_ms']:.2f} ms "
              f"(+{row['extra_p50_ms']:.2f} ms, {row['ratio_p50']:.2f}x)")
    save_results("lookup_overhead", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
