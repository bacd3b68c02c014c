"""Index types at 100k, 1M, ... labels: build time, memory, disk, latency, throughput, recall@10.

Label vectors are synthetic but shaped like real ones: the teacher's 25k label embeddings
(data/cache/, written by scripts/train_alias_label.py), resampled with noise to n rows. For 1024
dimensions they are first lifted by a random orthogonal map, which keeps every cosine. Queries
are the teacher's held-out alias embeddings, mapped the same way. Recall@10 is measured against
exact flat search on the same vectors, in the same run. "real" is the default data set itself.

Reads   data/cache/teacher_{label,alias}_embs.npy
Writes  benchmarks/results/index_scale.json (machine, date, command, one row per size x dim x type)

Example:
    python benchmarks/index_scale.py --sizes real 100000 --dims 384 --types flat hnsw ivf ivfpq
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

from harness import INDEX_TYPES, measure_index, save_results, synthetic


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["real", "100000", "1000000"],
                        help="label counts to test; 'real' is the default data set (default: real 100000 1000000)")
    parser.add_argument("--dims", nargs="+", type=int, default=[384, 1024], help="dimensions (default: 384 1024)")
    parser.add_argument("--types", nargs="+", default=list(INDEX_TYPES), choices=list(INDEX_TYPES),
                        help="index types (default: all)")
    parser.add_argument("--queries", type=int, default=300, help="queries timed one at a time (default: 300)")
    parser.add_argument("--noise", type=float, default=0.35,
                        help="noise added to each resampled label vector before normalising (default: 0.35)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the resampling (default: 0)")
    parser.add_argument("--output-name", default="index_scale", help="results file name (default: index_scale)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def main(args) -> dict:
    rows = []
    for size in args.sizes:
        for dim in args.dims:
            vectors, queries = synthetic(size, dim, args)
            truth = None
            # Exact flat search runs first, always: it is the reference for every other type's recall.
            for name in ["flat", *[t for t in args.types if t != "flat"]]:
                row, found = measure_index(name, vectors, queries, truth)
                if name == "flat":
                    truth = found
                row.update(n=len(vectors), dim=dim, size=size)
                rows.append(row)
                print(f"n={len(vectors):>8} d={dim:>4} {name:<11} build {row['build_s']:7.1f}s  "
                      f"index {row['index_mb']:8.1f} MB ({row['memory_vs_flat']:5.1%} of flat)  "
                      f"p50 {row['p50_ms']:7.2f} ms  p95 {row['p95_ms']:7.2f} ms  {row['batch_qps']:8.0f} q/s  "
                      f"recall@10 {row['recall_at_10']:.3f}", flush=True)
            del vectors
            gc.collect()
    save_results(args.output_name, {"queries": args.queries, "noise": args.noise, "rows": rows}, args.results_dir)
    return {"rows": rows}


if __name__ == "__main__":
    main(parse_args())
