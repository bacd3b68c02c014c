"""Cross-encoder training speed on a CPU: length-bucketed batches against the library's random ones.

The cross-encoder reads each (alias, label) pair as one sequence, padded to the longest pair of
its batch; labels run from a few tokens to the length cap, so random batches are mostly padding.
This trains the same cross-encoder (the bundled MiniLM, as ``scripts/train_cross_encoder.py``
trains the teacher's) on the same mined pairs both ways, the samplers taking turns for several
rounds, and keeps each sampler's fastest run, so that a drift in the machine's speed does not
decide the ratio. The pairs are a seeded sample of train aliases, each with its gold label and its
hardest negatives from the model's first stage, as the script mines them. Also printed: padded
tokens per real token of each sampler's batches.

Reads   data/processed/, the trained model (default: the teacher) with its indexes and calibration
Writes  benchmarks/results/cross_encoder_training.json

Example:
    python benchmarks/cross_encoder_training.py --aliases 320 --rounds 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.errors import run_main
from alias_label.models.load import bundled_model_path
from alias_label.search.rerank import FirstStage, pairs_table
from alias_label.search.retriever import check_split, load_dense
from alias_label.train.cross_encoder import mined_pairs, train_cross_encoder, train_sample
from alias_label.train.trainer import LengthBucketBatchSampler

SAMPLERS = {"library": False, "length buckets": True}
MAX_LENGTH = 48  # the script's default --max-length


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder whose first stage "
                                                           "mines the negatives (default: teacher)")
    parser.add_argument("--base", default=None, help="the cross-encoder's starting model (default: the bundled "
                                                     "all-MiniLM-L6-v2, as the script's for a teacher)")
    parser.add_argument("--aliases", type=int, default=320, help="train aliases sampled (default: 320)")
    parser.add_argument("--negatives", type=int, default=5, help="hard negatives per alias (default: 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per step, the script's default (32)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per sampler, taking turns; each sampler's fastest counts (default: 2)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def training_pairs(model: str, aliases: int, negatives: int) -> dict:
    """Mined (query, passage, label) pairs of a seeded sample of train aliases, as the script mines them."""
    split = load_split()
    dense = load_dense(model, "cpu", int8=False)
    check_split(dense, split.fingerprint)
    stage = FirstStage.build(dense.searcher, dense.candidates, dense.calibration["fusion"])
    sample = train_sample(split, aliases, seed=13)
    labels = dense.candidates.labels["label"].to_numpy()
    return mined_pairs(pairs_table(stage, split, sample), sample["alias"].tolist(), sample["label"].tolist(), labels,
                       negatives)


def padding_ratios(pairs: dict, base: str, batch_size: int) -> dict[str, float]:
    """Padded tokens per real token of each sampler's batches, a pair counted as the sequence it is read as."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    lengths = np.array([len(ids) for ids in tokenizer(pairs["query"], pairs["passage"], truncation=True,
                                                      max_length=MAX_LENGTH)["input_ids"]])
    order = np.random.default_rng(13).permutation(len(lengths))
    batches = {"library": [order[i:i + batch_size] for i in range(0, len(order), batch_size)],
               "length buckets": list(LengthBucketBatchSampler(Dataset.from_dict(pairs), batch_size, False,
                                                               valid_label_columns=["label"], seed=13,
                                                               tokenizer=tokenizer, max_length=MAX_LENGTH))}
    return {name: float(sum(len(b) * lengths[b].max() for b in cut) / lengths.sum()) for name, cut in batches.items()}


def seconds_to_train(pairs: dict, base: str, batch_size: int, length_buckets: bool) -> float:
    start = time.perf_counter()
    train_cross_encoder(pairs, base, "cpu", batch_size=batch_size, length_buckets=length_buckets)
    return time.perf_counter() - start


def main(args: argparse.Namespace) -> dict:
    pairs = training_pairs(args.model, args.aliases, args.negatives)
    base = str(args.base or bundled_model_path())
    runs = {name: [] for name in SAMPLERS}
    for _ in range(args.rounds):
        for name, buckets in SAMPLERS.items():
            runs[name].append(seconds_to_train(pairs, base, args.batch_size, buckets))
    padding = padding_ratios(pairs, base, args.batch_size)
    figures = {"model": args.model, "pairs": len(pairs["label"]), "batch_size": args.batch_size,
               "rounds": args.rounds,
               "samplers": {name: {"seconds": min(seconds), "rounds_seconds": seconds,
                                   "pairs_per_s": len(pairs["label"]) / min(seconds), "padding_ratio": padding[name]}
                            for name, seconds in runs.items()}}
    figures["speedup"] = figures["samplers"]["library"]["seconds"] / figures["samplers"]["length buckets"]["seconds"]
    for name, result in figures["samplers"].items():
        print(f"{name}: {result['seconds']:.1f} s, {result['pairs_per_s']:.1f} pairs/s, "
              f"padding {result['padding_ratio']:.2f}x the real tokens")
    print(f"length buckets train {figures['speedup']:.2f}x as fast as the library's random batches")
    save_results("cross_encoder_training", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
