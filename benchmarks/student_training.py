"""Student training speed: the repo's length-bucketed batches against the library's random ones.

The student imitates the teacher's embeddings of its queries (train aliases and generated
aliases) and documents (labels and label keys), two datasets of short names. Random batches pad
every text to the longest one in its batch; the repo's sampler cuts batches from windows sorted
by token count. This times the same training steps both ways, on the real texts of the split, with
the default student's shape (the bundled MiniLM with 3 of its 6 layers) and random unit vectors
as targets, which cost the same as the teacher's. Also printed: padded tokens per real token.

Reads   data/processed/ (python scripts/prepare_data.py)
Writes  benchmarks/results/student_training.json

Example:
    python benchmarks/student_training.py --steps 60
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from harness import save_results

from alias_label.data.split import load_split
from alias_label.models.load import bundled_model_path, embedding_dim, load_model
from alias_label.train.augment import AUGMENTATIONS
from alias_label.train.distill import generated_texts, imitated_texts, reduce_layers
from alias_label.train.trainer import make_trainer, text_lengths

SAMPLERS = ("library", "length buckets")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60, help="timed training steps per sampler (default: 60)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per step, the student's default (64)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="runs per sampler, taking turns; each sampler's fastest counts (default: 2)")
    parser.add_argument("--texts", type=int, default=None,
                        help="use only the first N texts of each dataset, for a quick check (default: all)")
    parser.add_argument("--model", default=None,
                        help="the model whose layer-reduced copy trains (default: the bundled MiniLM)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    return parser.parse_args(argv)


def student_texts(limit: int | None) -> dict[str, list[str]]:
    """The student's two datasets: queries (train and generated aliases) and documents (labels and keys)."""
    split = load_split()
    _, texts = imitated_texts(split, generated_texts(split, list(AUGMENTATIONS)))
    return {name: column[:limit] for name, column in texts.items()}


def datasets(texts: dict[str, list[str]], dim: int):
    from datasets import Dataset

    rng = np.random.default_rng(0)
    out = {}
    for name, column in texts.items():
        targets = rng.normal(size=(len(column), dim)).astype(np.float32)
        targets /= np.linalg.norm(targets, axis=1, keepdims=True)
        out[name] = Dataset.from_dict({"text": column, "label": targets.tolist()})
    return out


def time_steps(sampler: str, texts, args) -> dict:
    """Seconds per step after warm-up, and padded tokens per real token, for one sampler."""
    from sentence_transformers.sentence_transformer.losses import MSELoss
    from transformers import TrainerCallback

    model = load_model(args.model or bundled_model_path(), "cpu")
    reduce_layers(model, None)
    data = datasets(texts, embedding_dim(model))
    stamps = []

    class Clock(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    settings = SimpleNamespace(epochs=1, batch_size=args.batch_size, lr=1e-3, seed=13, warmup_ratio=0.1,
                               save_steps=10**9, save_minutes=0, stop_after_steps=None)
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(model, data, {name: MSELoss(model) for name in data}, settings, Path(out) / "s",
                               "cpu", [Clock()])
        if sampler == "library":
            trainer.args.batch_sampler = "batch_sampler"
        trainer.args.max_steps = args.warmup_steps + args.steps
        batches = list(trainer.get_train_dataloader().batch_sampler)[:trainer.args.max_steps]
        trainer.train()
    lengths = np.concatenate([text_lengths(column, model.tokenizer, model.max_seq_length) for column in texts.values()])
    padded = sum(len(batch) * lengths[batch].max() for batch in batches)
    real = sum(lengths[batch].sum() for batch in batches)
    seconds = (stamps[-1] - stamps[args.warmup_steps - 1]) / args.steps
    return {"seconds_per_step": seconds, "texts_per_s": args.batch_size / seconds, "padding_ratio":
            float(padded / real)}


def main(args) -> dict:
    texts = student_texts(args.texts)
    # The samplers take turns and each keeps its fastest run, so a drift in the machine's speed
    # during one run does not decide the ratio.
    runs = {name: [] for name in SAMPLERS}
    for _ in range(args.rounds):
        for name in SAMPLERS:
            runs[name].append(time_steps(name, texts, args))
    figures = {"steps": args.steps, "rounds": args.rounds, "batch_size": args.batch_size,
               "texts": {name: len(column) for name, column in texts.items()},
               "samplers": {name: min(results, key=lambda r: r["seconds_per_step"]) for name, results in runs.items()}}
    ours, library = figures["samplers"]["length buckets"], figures["samplers"]["library"]
    figures["speedup"] = library["seconds_per_step"] / ours["seconds_per_step"]
    for name, result in figures["samplers"].items():
        print(f"{name}: {result['seconds_per_step']:.3f} s/step, {result['texts_per_s']:.0f} texts/s, "
              f"padding {result['padding_ratio']:.2f}x the real tokens")
    print(f"length buckets train {figures['speedup']:.2f}x as many steps per second as the library's sampler")
    save_results("student_training", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
