"""Encoding many labels on this machine's CPU: texts a second at each batch size, and the ratio to 128.

Every index build, hard-negative mining round and baseline encodes the whole label table, so the
batch size of ``alias_label.models.encode`` sets much of the pipeline's time on a CPU. A sample of
the split's labels is encoded at each batch size, the sizes taking turns for several rounds, so
that a drift in the machine's speed reaches every size alike; each size's figure is its median
round. The model is the teacher when the pipeline has trained one, else the bundled base model,
of the same shape; ``--int8`` runs its Linear layers in int8, as the student runs on a CPU.

Reads   data/processed/ (the labels), models/trained/alias_label_teacher/ (or --model)
Writes  benchmarks/results/encode_batch.json

Example:
    python benchmarks/encode_batch.py --texts 4000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.models.encode import CPU_BATCH, encode
from alias_label.models.load import load_model
from alias_label.models.quantize import quantize_int8
from alias_label.paths import paths

BASELINE = 128  # sentence-transformers' encode runs 32 by default; 128 is what large GPU batches suggest


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None,
                        help="a sentence-transformers folder (default: the trained teacher, else the bundled base)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, CPU_BATCH, 64, BASELINE],
                        help=f"batch sizes to compare (default: 8 16 {CPU_BATCH} 64 {BASELINE})")
    parser.add_argument("--texts", type=int, default=4000, help="labels sampled from the split (default: 4000)")
    parser.add_argument("--rounds", type=int, default=3, help="times each size encodes the sample (default: 3)")
    parser.add_argument("--int8", action="store_true", help="run the model's Linear layers in int8")
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    parser.add_argument("--tag", default="", help="suffix of the results file, e.g. int8")
    return parser.parse_args(argv)


def pick_model(folder: Path | None) -> str | None:
    """The model to time: the given folder, else the trained teacher, else None (the bundled base)."""
    if folder is not None:
        return str(folder)
    teacher = paths().teacher
    return str(teacher) if (teacher / "modules.json").exists() else None


def texts_per_second(model, texts: list[str], sizes: list[int], rounds: int) -> dict[int, list[float]]:
    """Each size's pace in every round, the sizes taking turns within a round."""
    encode(model, texts[:64], "document")  # warm-up: the first forward passes allocate
    paces = {size: [] for size in sizes}
    for _ in range(rounds):
        for size in sizes:
            start = time.perf_counter()
            encode(model, texts, "document", batch_size=size, progress=False)
            paces[size].append(len(texts) / (time.perf_counter() - start))
    return paces


def main(args: argparse.Namespace) -> dict:
    labels = load_split(args.processed_dir).labels["label"].to_numpy()
    rng = np.random.default_rng(0)
    texts = rng.choice(labels, min(args.texts, len(labels)), replace=False).tolist()
    source = pick_model(args.model)
    model = load_model(source, "cpu")
    if args.int8:
        model = quantize_int8(model)
    sizes = sorted(set(args.sizes) | {BASELINE})
    paces = texts_per_second(model, texts, sizes, args.rounds)
    median = {size: statistics.median(values) for size, values in paces.items()}
    figures = {"model": source or "bundled base model", "int8": args.int8, "texts": len(texts), "rounds": args.rounds,
               "baseline_batch": BASELINE, "default_cpu_batch": CPU_BATCH,
               "sizes": {str(size): {"texts_per_s": median[size], "rounds_texts_per_s": paces[size],
                                     "vs_baseline": median[size] / median[BASELINE]} for size in sizes}}
    for size in sizes:
        print(f"batch {size:4d}: {median[size]:7.1f} texts/s  {median[size] / median[BASELINE]:.2f}x batch {BASELINE}")
    save_results("encode_batch" + (f"_{args.tag}" if args.tag else ""), figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
