"""GPU throughput of encoding and teacher training, ours against plain sentence-transformers.

The model has e5-large-v2's shape (BertConfig: 1024 hidden, 24 layers, 16 heads, 4096
intermediate) with random weights and the bundled tokenizer (the same uncased WordPiece
vocabulary as e5): speed depends on the shape, not on the weights. Texts are real alias and
label strings from the default data. In one run:

- encode: ``fast_encode`` (bf16 weights, token-budget batches sorted by token count, tokenisation
  in workers, one device->host copy) against ``SentenceTransformer.encode`` at fp32, batch 32,
  and against the forward passes alone on batches prepared beforehand (the ceiling);
- training: this repo's trainer (bf16 autocast, batches bucketed by token count with no repeated
  text, tokenising workers, aliases and labels in one forward pass) against the plain trainer
  (fp32, random batches, no workers), both MultipleNegativesRankingLoss at batch 256, in pairs per
  second after warm-up steps; also ours with a forward pass per column, as the library does;
- correctness: a small fixture encoded on CPU in fp32 and on the GPU by ``fast_encode``: top-1
  agreement of alias -> label search and the largest cosine difference.

Writes  benchmarks/results/gpu_throughput.json (device, encode_sentences_per_min,
        baseline_encode_sentences_per_min, train_pairs_per_s, baseline_train_pairs_per_s, ...)

Example (on the GPU machine):
    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --smoke   # tiny model, CPU is fine: checks the script runs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from harness import RESULTS, save_results

from alias_label.data.swot import build_swot_table
from alias_label.models.encode import encode
from alias_label.models.fast_encode import TokenisedChunks, fast_encode, half_precision_copy, inference_dtype
from alias_label.models.load import pick_device, precision_name
from alias_label.models.random import random_bert_folder

E5_LARGE = {"hidden": 1024, "layers": 24, "heads": 16, "intermediate": 4096}
TINY = {"hidden": 64, "layers": 2, "heads": 2, "intermediate": 128}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=int, default=400_000, help="texts for our encoder (default: 400000)")
    parser.add_argument("--baseline-sentences", type=int, default=20_000,
                        help="texts for plain encode at fp32, batch 32 (default: 20000)")
    parser.add_argument("--train-steps", type=int, default=40, help="timed training steps each (default: 40)")
    parser.add_argument("--warmup-steps", type=int, default=5, help="untimed steps first (default: 5)")
    parser.add_argument("--batch-size", type=int, default=256, help="training pairs per step (default: 256)")
    parser.add_argument("--ceiling-sentences", type=int, default=100_000,
                        help="texts for the forward-passes-only ceiling (default: 100000)")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="profile this many of our training steps after the timed ones (default: 0)")
    parser.add_argument("--fixture", type=int, default=500, help="labels in the CPU/GPU check (default: 500)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and a few texts, to test the script")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.baseline_sentences, args.ceiling_sentences, args.fixture = 600, 200, 300, 60
        args.train_steps, args.warmup_steps, args.profile_steps, args.batch_size = 3, 1, 2, 16
    return args


def load_random_model(folder: Path, device: str):
    """A fresh SentenceTransformer (mean pooling, normalised) on the saved weights, so each run starts equal."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling

    transformer = Transformer(str(folder), max_seq_length=64)
    dim = transformer.get_embedding_dimension()
    return SentenceTransformer(modules=[transformer, Pooling(dim, "mean"), Normalize()], device=device)


def texts_of(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """n strings cycled from the real aliases and labels, and real (alias, label) pairs with each
    label and alias once: MNRL batches hold no repeated text, so repeats would shrink them."""
    table = build_swot_table()
    pairs = table[table["alias"] != ""][["alias", "label"]].drop_duplicates("label").drop_duplicates("alias")
    pool = np.concatenate([table["label"].unique(), table.loc[table["alias"] != "", "alias"].unique()])
    return [str(pool[i % len(pool)]) for i in range(n)], list(pairs.itertuples(index=False, name=None))


def synchronise(device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter()


def sentences_per_min(run, texts: list[str], device: str, warmup: int) -> float:
    """Texts per minute of ``run(texts)``, after an untimed run on the first ``warmup`` texts
    (kernel selection, allocator growth, the half-precision copy)."""
    run(texts[:warmup])
    start = synchronise(device)
    run(texts)
    return len(texts) / (synchronise(device) - start) * 60


def gpu_only_sentences_per_min(model, texts: list[str], device: str) -> float:
    """The model's forward passes alone, on batches tokenised and copied beforehand: the ceiling
    that ``fast_encode`` reaches when tokenisation and copies stay off the critical path."""
    chunks = TokenisedChunks(model, texts, None)
    prepared = [(rows, {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()})
                for i in range(len(chunks)) for rows, features in chunks[i]]
    runner = half_precision_copy(model, inference_dtype(device))
    with torch.inference_mode():
        start = synchronise(device)
        for _, features in prepared:
            runner(features)
        return len(texts) / (synchronise(device) - start) * 60


def encode_figures(model, texts, args, device) -> dict:
    baseline_texts = texts[:args.baseline_sentences]
    baseline = sentences_per_min(lambda chunk: model.encode(chunk, batch_size=32, convert_to_numpy=True),
                                 baseline_texts, device, warmup=1_000)
    ours = sentences_per_min(lambda chunk: fast_encode(model, chunk), texts, device, warmup=20_000)
    ceiling = gpu_only_sentences_per_min(model, texts[:args.ceiling_sentences], device)
    print(f"encode: ours {ours:,.0f}/min, plain fp32 batch 32 {baseline:,.0f}/min ({ours / baseline:.1f}x); "
          f"forward passes alone {ceiling:,.0f}/min (ours reaches {ours / ceiling:.0%} of it)")
    return {"encode_sentences_per_min": ours, "baseline_encode_sentences_per_min": baseline,
            "encode_speedup": ours / baseline, "encode_forward_only_sentences_per_min": ceiling,
            "encode_sentences": len(texts), "baseline_encode_sentences": len(baseline_texts)}


def profile_table(profiler, device: str) -> str:
    """The profiled steps' top operators, and how busy the GPU was over them."""
    averages = profiler.key_averages()
    sort = "self_device_time_total" if device.startswith("cuda") else "self_cpu_time_total"
    busy_us = sum(getattr(event, "self_device_time_total", 0) for event in averages)
    return f"GPU busy {busy_us / 1e3:.1f} ms over the profiled steps\n" + averages.table(sort_by=sort, row_limit=25)


def pairs_per_s(model, pairs, args, device: str, ours: bool, one_forward: bool = True) -> float:
    """Pairs per second over the timed steps of one short training run, counting the rows each
    step really had. ``ours``: this repo's trainer and loss (both columns in one forward pass on a
    GPU unless ``one_forward`` is off); with ``--profile-steps``, it profiles that many more steps."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from alias_label.train.trainer import make_trainer, ranking_loss

    timed_end = args.warmup_steps + args.train_steps
    profiled = args.profile_steps if ours and one_forward else 0
    dataset = Dataset.from_dict({"alias": [a for a, _ in pairs], "canonical": [lab for _, lab in pairs]})
    stamps, rows_per_step = {}, []
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]
                                      + ([torch.profiler.ProfilerActivity.CUDA] if device.startswith("cuda") else []))

    class Clock(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            if state.global_step in (args.warmup_steps, timed_end):
                stamps[state.global_step] = synchronise(device)
            if profiled and state.global_step == timed_end:
                profiler.start()
            if profiled and state.global_step == timed_end + profiled:
                synchronise(device)
                profiler.stop()

    loss = ranking_loss(model, device) if ours and one_forward else MultipleNegativesRankingLoss(model)
    loss.register_forward_pre_hook(lambda module, inputs: rows_per_step.append(len(inputs[0][0]["input_ids"])))
    with tempfile.TemporaryDirectory() as out:
        if ours:
            settings = argparse.Namespace(epochs=1, batch_size=args.batch_size, lr=1e-5, warmup_ratio=0.0, seed=0,
                                          save_steps=10**9, save_minutes=0, stop_after_steps=None)
            trainer = make_trainer(model, dataset, loss, settings, Path(out) / "m", device, [Clock()],
                                   unique_batches=True)
        else:
            plain = SentenceTransformerTrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                                                         learning_rate=1e-5, save_strategy="no", report_to="none",
                                                         use_cpu=not device.startswith("cuda"))
            trainer = SentenceTransformerTrainer(model=model, args=plain, train_dataset=dataset, loss=loss,
                                                 callbacks=[Clock()])
        trainer.args.max_steps = timed_end + profiled
        trainer.train()
    if profiled:
        target = Path(args.results_dir or RESULTS) / "gpu_throughput_train_profile.txt"
        target.write_text(profile_table(profiler, device))
        print(f"wrote {target}")
    timed_rows = sum(rows_per_step[args.warmup_steps:timed_end])
    print(f"{'ours' if ours else 'plain'} ({type(loss).__name__}): {timed_rows / args.train_steps:.1f} pairs per "
          f"timed step")
    return timed_rows / (stamps[timed_end] - stamps[args.warmup_steps])


def agreement_check(model, texts_pairs, args, device) -> dict:
    """Same fixture on CPU fp32 (plain encode) and on the device (fast_encode): same top-1 labels?"""
    pairs = texts_pairs[:args.fixture]
    labels = sorted({label for _, label in pairs})
    aliases = [alias for alias, _ in pairs]
    on_device = {kind: fast_encode(model, texts) for kind, texts in (("labels", labels), ("aliases", aliases))}
    model.to("cpu")
    on_cpu = {kind: encode(model, texts) for kind, texts in (("labels", labels), ("aliases", aliases))}
    model.to(device)
    top_device = (on_device["aliases"] @ on_device["labels"].T).argmax(1)
    top_cpu = (on_cpu["aliases"] @ on_cpu["labels"].T).argmax(1)
    cosine_gap = max(float(np.abs(1 - np.sum(on_device[k] * on_cpu[k], axis=1)).max()) for k in on_cpu)
    print(f"CPU fp32 vs {device} {precision_name(device)}: top-1 agreement {np.mean(top_device == top_cpu):.4f}, "
          f"largest 1 - cosine {cosine_gap:.2e}")
    return {"check_top1_agreement": float(np.mean(top_device == top_cpu)), "check_max_one_minus_cosine": cosine_gap,
            "check_fixture": {"labels": len(labels), "aliases": len(aliases)}}


def software() -> dict:
    import sentence_transformers
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__}


def training_figures(folder: Path, pairs, args, device: str) -> dict:
    baseline = pairs_per_s(load_random_model(folder, device), pairs, args, device, ours=False)
    per_column = pairs_per_s(load_random_model(folder, device), pairs, args, device, ours=True, one_forward=False)
    ours = pairs_per_s(load_random_model(folder, device), pairs, args, device, ours=True)
    print(f"training at batch {args.batch_size}: ours {ours:,.0f} pairs/s, plain {baseline:,.0f} pairs/s "
          f"({ours / baseline:.1f}x); ours with a forward pass per column {per_column:,.0f} pairs/s")
    return {"train_pairs_per_s": ours, "baseline_train_pairs_per_s": baseline,
            "train_speedup": ours / baseline, "train_pairs_per_s_forward_per_column": per_column,
            "train_batch_size": args.batch_size}


def main(args) -> dict:
    device = pick_device(args.device)
    shape = TINY if args.smoke else E5_LARGE
    name = "gpu_throughput_smoke" if args.smoke else "gpu_throughput"
    texts, pairs = texts_of(args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        folder = random_bert_folder(Path(tmp), **shape)
        model = load_random_model(folder, device)
        figures = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                   "precision": precision_name(device), "model_shape": shape, "software": software(),
                   "mean_tokens_per_text": float(np.mean([len(t) for t in model.tokenizer(texts[:5000])["input_ids"]]))}
        # Saved after each phase: a run cut short keeps what it measured.
        for phase in (lambda: encode_figures(model, texts, args, device),
                      lambda: agreement_check(model, pairs, args, device),
                      lambda: training_figures(folder, pairs, args, device)):
            figures.update(phase())
            save_results(name, figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
