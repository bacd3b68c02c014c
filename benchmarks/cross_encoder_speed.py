"""Cross-encoder speed on a CPU: batches of pairs sorted by length against batches in their order.

The cross-encoder reads each (alias, label) pair as one sequence, padded to the longest pair of
its batch; labels run from a few tokens to the length cap, so batches of pairs in their given
order are mostly padding. Two places batch many pairs:

- training: the same cross-encoder (the bundled MiniLM, as ``scripts/train_cross_encoder.py``
  trains the teacher's) trained on the same mined pairs with the repo's length-bucketed batches
  and with the library's random ones. The pairs are a seeded sample of train aliases, each with
  its gold label and its hardest negatives from the model's first stage, as the script mines them;
- scoring: the model's own cross-encoder scoring each validation alias's first candidates by
  fused score, in batches sorted by length (what ``PairModel.predict`` does past one batch, as a
  GPU's lookups and fits do) and in batches of the pairs in their order (a CPU's lookups score
  each alias's pairs so, as a batch of their own).

The two ways take turns for several rounds and each keeps its fastest run, so that a drift in the
machine's speed does not decide the ratio. Also reported: padded tokens per real token of each
way's batches (for the library's random batches, those of a seeded shuffle of the pairs), and the
largest difference between the two ways' scores.

Reads   data/processed/, the trained model (default: the teacher) with its indexes, calibration
        and cross-encoder
Writes  benchmarks/results/cross_encoder_speed.json

Example:
    python benchmarks/cross_encoder_speed.py --aliases 320 --rounds 2
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
from alias_label.search.cross import head, load_cross_encoder
from alias_label.search.rerank import FirstStage, pairs_table
from alias_label.search.retriever import check_split, load_dense
from alias_label.train.cross_encoder import mined_pairs, train_cross_encoder, train_sample
from alias_label.train.trainer import LengthBucketBatchSampler

SAMPLERS = {"library": False, "length buckets": True}
MAX_LENGTH = 48  # the script's default --max-length


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder: its first stage "
                                                           "mines the negatives, its cross-encoder scores "
                                                           "(default: teacher)")
    parser.add_argument("--base", default=None, help="the cross-encoder trained, from this starting model (default: "
                                                     "the bundled all-MiniLM-L6-v2, as the script's for a teacher)")
    parser.add_argument("--aliases", type=int, default=320, help="train aliases sampled (default: 320)")
    parser.add_argument("--negatives", type=int, default=5, help="hard negatives per alias (default: 5)")
    parser.add_argument("--score-aliases", type=int, default=300,
                        help="validation aliases whose first candidates are scored (default: 300)")
    parser.add_argument("--batch-size", type=int, default=32, help="pairs per batch, the scripts' default (32)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs of each way, taking turns; each way's fastest counts (default: 2)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def padding_ratio(lengths: np.ndarray, batches) -> float:
    """Padded tokens per real token: each batch pads to its longest pair."""
    return float(sum(len(batch) * lengths[batch].max() for batch in batches) / lengths.sum())


def pair_lengths(tokenizer, pairs: list[tuple[str, str]]) -> np.ndarray:
    """Tokens of each pair read as one sequence."""
    encoded = tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True, max_length=MAX_LENGTH)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def fastest(ways: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of every run of each way, the ways taking turns."""
    seconds = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def compared(seconds: dict[str, list[float]], pairs: int, padding: dict[str, float], baseline: str, ours: str,
             ) -> dict:
    """Each way's fastest run, pace and padding, and how much faster ``ours`` ran than ``baseline``."""
    ways = {name: {"seconds": min(runs), "rounds_seconds": runs, "pairs_per_s": pairs / min(runs),
                   "padding_ratio": padding[name]} for name, runs in seconds.items()}
    return {"pairs": pairs, "ways": ways, "speedup": ways[baseline]["seconds"] / ways[ours]["seconds"]}


def training(stage: FirstStage, split, labels: np.ndarray, args) -> dict:
    """Train on the same mined pairs with each sampler; padding of each sampler's batches."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    sample = train_sample(split, args.aliases, seed=13)
    pairs = mined_pairs(pairs_table(stage, split, sample), sample["alias"].tolist(), sample["label"].tolist(), labels,
                        args.negatives)
    base = str(args.base or bundled_model_path())
    ways = {name: (lambda buckets=buckets: train_cross_encoder(pairs, base, "cpu", batch_size=args.batch_size,
                                                               length_buckets=buckets))
            for name, buckets in SAMPLERS.items()}
    seconds = fastest(ways, args.rounds)
    tokenizer = AutoTokenizer.from_pretrained(base)
    lengths = pair_lengths(tokenizer, list(zip(pairs["query"], pairs["passage"], strict=True)))
    order = np.random.default_rng(13).permutation(len(lengths))
    batches = {"library": [order[i:i + args.batch_size] for i in range(0, len(order), args.batch_size)],
               "length buckets": list(LengthBucketBatchSampler(Dataset.from_dict(pairs), args.batch_size, False,
                                                               valid_label_columns=["label"], seed=13,
                                                               tokenizer=tokenizer, max_length=MAX_LENGTH))}
    return compared(seconds, len(lengths), {name: padding_ratio(lengths, cut) for name, cut in batches.items()},
                    "library", "length buckets")


def scoring(stage: FirstStage, split, dense, args) -> dict:
    """Score validation aliases' first candidates in batches sorted by length and in their order."""
    scorer = load_cross_encoder(dense.model_dir, dense.candidates.labels["label"].to_numpy(), "cpu")
    val = split.pairs("val").iloc[:args.score_aliases]
    rows, matrices, _, _ = pairs_table(stage, split, val)
    pairs = [(alias, scorer.labels[r[i]]) for alias, r, m in zip(val["alias"], rows, matrices, strict=True)
             for i in head(m, scorer.top)]
    size = args.batch_size
    cuts = [np.arange(start, min(start + size, len(pairs))) for start in range(0, len(pairs), size)]

    def in_order() -> np.ndarray:  # each call one batch, which predict scores as given
        return np.concatenate([scorer.model.predict([pairs[i] for i in cut], size) for cut in cuts])

    def sorted_by_length() -> np.ndarray:
        return scorer.model.predict(pairs, size)

    ways = {"in their order": in_order, "sorted by length": sorted_by_length}
    seconds = fastest(ways, args.rounds)
    lengths = pair_lengths(scorer.model.tokenizer, pairs)
    by_length = np.argsort(lengths, kind="stable")
    batches = {"in their order": cuts, "sorted by length": [by_length[cut] for cut in cuts]}
    figures = compared(seconds, len(pairs), {name: padding_ratio(lengths, cut) for name, cut in batches.items()},
                       "in their order", "sorted by length")
    figures["max_score_difference"] = float(np.abs(in_order() - sorted_by_length()).max())
    return figures


def main(args: argparse.Namespace) -> dict:
    split = load_split()
    dense = load_dense(args.model, "cpu", int8=False)
    check_split(dense, split.fingerprint)
    stage = FirstStage.build(dense.searcher, dense.candidates, dense.calibration["fusion"])
    labels = dense.candidates.labels["label"].to_numpy()
    figures = {"model": args.model, "batch_size": args.batch_size, "rounds": args.rounds,
               "training": training(stage, split, labels, args), "scoring": scoring(stage, split, dense, args)}
    for part, baseline in (("training", "library"), ("scoring", "in their order")):
        for name, result in figures[part]["ways"].items():
            print(f"{part}, {name}: {result['seconds']:.1f} s, {result['pairs_per_s']:.1f} pairs/s, "
                  f"padding {result['padding_ratio']:.2f}x the real tokens")
        print(f"{part}: {figures[part]['speedup']:.2f}x as fast as {baseline}")
    save_results("cross_encoder_speed", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    run_main(main, parse_args())
