"""HNSW's efSearch against recall@10 and latency at one table size: where the default comes from.

Same vectors and queries as benchmarks/index_scale.py (resampled teacher label vectors, real
alias queries); recall against exact flat search in the same run.

Reads   data/cache/teacher_{label,alias}_embs.npy
Writes  benchmarks/results/hnsw_ef_sweep.json

Example:
    python benchmarks/hnsw_ef_sweep.py --size 1000000 --ef 128 256 512 1024
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import percentiles, save_results, synthetic

from alias_label.index.dense import IndexSpec, build_index


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1000000", help="label count, or 'real' (default: 1000000)")
    parser.add_argument("--dim", type=int, default=384, help="dimension (default: 384)")
    parser.add_argument("--ef", nargs="+", type=int, default=[128, 256, 512, 1024],
                        help="efSearch values (default: 128 256 512 1024)")
    parser.add_argument("--queries", type=int, default=300, help="queries timed one at a time (default: 300)")
    parser.add_argument("--noise", type=float, default=0.35, help="as in index_scale.py (default: 0.35)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def main(args) -> dict:
    vectors, queries = synthetic(args.size, args.dim, args)
    truth = build_index(vectors).search(queries, 10)[1]
    start = time.perf_counter()
    index = build_index(vectors, IndexSpec.scaled(len(vectors), args.dim, "hnsw"))
    figures = {"n": len(vectors), "dim": args.dim, "build_s": time.perf_counter() - start, "rows": []}
    for ef in args.ef:
        index.index.hnsw.efSearch = ef
        latencies = []
        for query in queries:
            t0 = time.perf_counter()
            index.search(query[None], 10)
            latencies.append((time.perf_counter() - t0) * 1000)
        found = index.search(queries, 10)[1]
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
        figures["rows"].append({"ef_search": ef, **percentiles(latencies), "recall_at_10": recall})
        print(f"efSearch {ef}: p50 {figures['rows'][-1]['p50_ms']:.2f} ms, recall@10 {recall:.3f}", flush=True)
    save_results("hnsw_ef_sweep", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
