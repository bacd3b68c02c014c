"""Peak memory of encoding and indexing 1M generated labels: streamed vs encode-all-then-index.

Each approach runs in its own child process, which reports its peak resident memory (ru_maxrss):
- naive: ``SentenceTransformer.encode`` on the whole list, then a flat index from the array;
- streamed (flat): ``encode_to_file`` chunks into a memory-mapped .npy, each chunk added to a
  flat index as it arrives;
- streamed (ivfpq): the same into a compressed index, whose memory does not grow with 4 x d per row.

Memory depends on the embedding size, not on the weights, so a small random encoder with a
384-dimensional output (MiniLM's width) stands in for the model to keep the run short: one
32-wide BERT layer, then a Dense projection to 384 dimensions.

Writes  benchmarks/results/encode_memory.json

Example:
    python benchmarks/encode_memory.py --labels 1000000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import save_results

APPROACHES = ("naive", "streamed-flat", "streamed-ivfpq")
DIM = 384  # MiniLM's embedding size


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=1_000_000, help="generated labels (default: 1000000)")
    parser.add_argument("--approach", choices=APPROACHES, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def generated_labels(n: int) -> list[str]:
    """Institution-like names: a place, a kind and a field, in many combinations."""
    places = ["North", "South", "Eastern", "Western", "Central", "Upper", "Lower", "New", "Old", "Greater"]
    kinds = ["University", "College", "Institute", "School", "Academy", "Polytechnic"]
    fields = ["Technology", "Arts", "Medicine", "Agriculture", "Law", "Music", "Science", "Commerce"]
    return [f"{places[i % 10]} {fields[(i // 10) % 8]} {kinds[(i // 80) % 6]} {i // 480}" for i in range(n)]


def child(args) -> dict:
    """One approach in this process; prints its peak memory as JSON."""
    from sentence_transformers.sentence_transformer.modules import Dense

    from alias_label.index.dense import DenseIndex, IndexSpec, build_index
    from alias_label.index.stream import encode_to_file
    from alias_label.models.load import load_model
    from alias_label.models.random import random_sentence_model

    folder = random_sentence_model(args.workdir / "model", hidden=32, layers=1, heads=2)
    model = load_model(folder, "cpu", max_seq_length=16)
    model.append(Dense(32, DIM))
    texts = generated_labels(args.labels)
    if args.approach == "naive":
        embeddings = model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
        index = build_index(embeddings)
    else:
        kind = "ivfpq" if args.approach == "streamed-ivfpq" else "flat"
        index = DenseIndex.empty(DIM, IndexSpec.scaled(len(texts), DIM, kind, rescore=0))
        encode_to_file(model, texts, "document", args.workdir / "vectors.npy", index)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"approach": args.approach, "rows": index.ntotal, "peak_rss_mb": peak_mb}))


def main(args) -> dict:
    if args.approach:
        return child(args)
    rows = []
    for approach in APPROACHES:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, __file__, "--labels", str(args.labels), "--approach", approach,
                       "--workdir", tmp]
            result = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    naive = rows[0]["peak_rss_mb"]
    figures = {"labels": args.labels, "dim": DIM, "rows": rows,
               "streamed_vs_naive": {row["approach"]: row["peak_rss_mb"] / naive for row in rows[1:]}}
    save_results("encode_memory", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
