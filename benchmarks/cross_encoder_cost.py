"""What a cross-encoder would cost a single lookup on this CPU, before any question of quality.

A cross-encoder reads each (alias, candidate) pair together, so one lookup runs the model once per
candidate instead of once per query. This times sentence-transformers' ``CrossEncoder`` built from
the bundled all-MiniLM-L6-v2 (6 layers, the smallest model the repo ships; its classification head
is untrained, which does not change the time) scoring each test alias against its first-stage
candidates, against the whole reranked lookup of the same aliases.

Reads   data/processed/, the trained teacher with its indexes and reranker
Writes  benchmarks/results/cross_encoder_cost.json

Example:
    python benchmarks/cross_encoder_cost.py --queries 50
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from harness import percentiles, save_results

from alias_label.data.split import load_split
from alias_label.models.load import bundled_model_path
from alias_label.search.retriever import load_retriever


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=50, help="test aliases timed (default: 50)")
    parser.add_argument("--model", default=None, help="cross-encoder base (default: the bundled MiniLM)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def main(args) -> dict:
    from sentence_transformers import CrossEncoder

    split = load_split()
    retriever = load_retriever("teacher")
    cross = CrossEncoder(str(args.model or bundled_model_path()), num_labels=1, device="cpu", max_length=64)
    labels = retriever.candidates.labels["label"].to_numpy()
    aliases = split.test["alias"].tolist()[:args.queries]
    cross_ms, lookup_ms, pairs = [], [], []
    for alias in aliases:
        start = time.perf_counter()
        retriever.labels_for([alias], 10)
        lookup_ms.append((time.perf_counter() - start) * 1000)
        rows = retriever.searcher.first_stage.candidates([alias])[0][0]
        pairs.append(len(rows))
        start = time.perf_counter()
        cross.predict([(alias, labels[row]) for row in rows], batch_size=len(rows) or 1)
        cross_ms.append((time.perf_counter() - start) * 1000)
    figures = {"queries": len(aliases), "mean_candidates": sum(pairs) / len(pairs),
               "cross_encoder": percentiles(cross_ms), "reranked_lookup": percentiles(lookup_ms)}
    cross_p50, lookup_p50 = figures["cross_encoder"]["p50_ms"], figures["reranked_lookup"]["p50_ms"]
    figures["cross_encoder_vs_lookup_p50"] = cross_p50 / lookup_p50
    print(f"cross-encoder over {figures['mean_candidates']:.0f} candidates: p50 {cross_p50:.1f} ms, "
          f"{cross_p50 / lookup_p50:.1f}x the whole reranked lookup ({lookup_p50:.1f} ms)")
    save_results("cross_encoder_cost", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
