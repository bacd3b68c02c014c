"""GPU throughput of encoding and teacher training, ours against plain sentence-transformers.

The model has e5-large-v2's shape (BertConfig: 1024 hidden, 24 layers, 16 heads, 4096
intermediate) with random weights and the bundled tokenizer (the same uncased WordPiece
vocabulary as e5): speed depends on the shape, not on the weights. Texts are real alias and
label strings from the default data. In one run:

- encode: ``fast_encode`` (bf16 weights, token-budget length-sorted batches, tokenisation in
  workers, one device->host copy) against ``SentenceTransformer.encode`` at fp32, batch 32;
- training: this repo's trainer (bf16 autocast, length-bucketed batches with no repeated text,
  tokenising workers) against the plain trainer (fp32, random batches, no workers), both
  MultipleNegativesRankingLoss at batch 256, in pairs per second after warm-up steps;
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
from harness import save_results

from alias_label.data import build_swot_table
from alias_label.fast_encode import fast_encode
from alias_label.modeling import encode, pick_device, precision_name

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
    parser.add_argument("--fixture", type=int, default=500, help="labels in the CPU/GPU check (default: 500)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="where to run")
    parser.add_argument("--smoke", action="store_true", help="a tiny model and a few texts, to test the script")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.smoke:
        args.sentences, args.baseline_sentences, args.train_steps, args.warmup_steps = 600, 200, 3, 1
        args.batch_size, args.fixture = 16, 60
    return args


def random_model(shape: dict, folder: Path, device: str):
    """A SentenceTransformer of the given BERT shape, random weights, bundled tokenizer, mean pooling."""
    import shutil

    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from transformers import BertConfig, BertModel

    from alias_label.modeling import bundled_model_path

    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                        num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"])
    BertModel(config).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(bundled_model_path() / name, folder / name)
    modules = [Transformer(str(folder), max_seq_length=64), Pooling(shape["hidden"], "mean"), Normalize()]
    return SentenceTransformer(modules=modules, device=device)


def texts_of(n: int) -> tuple[list[str], list[tuple[str, str]]]:
    """n strings cycled from the real aliases and labels, and the real (alias, label) pairs."""
    table = build_swot_table()
    pairs = table[table["alias"] != ""][["alias", "label"]].drop_duplicates()
    pool = np.concatenate([table["label"].unique(), pairs["alias"].unique()])
    return [str(pool[i % len(pool)]) for i in range(n)], list(pairs.itertuples(index=False, name=None))


def sentences_per_min(run, n: int, device: str) -> float:
    run()  # warm-up on a slice: kernel selection, allocator growth
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start) * 60


def encode_figures(model, texts, args, device) -> dict:
    baseline_texts = texts[:args.baseline_sentences]
    baseline = sentences_per_min(lambda: model.encode(baseline_texts, batch_size=32, convert_to_numpy=True),
                                 len(baseline_texts), device)
    ours = sentences_per_min(lambda: fast_encode(model, texts), len(texts), device)
    print(f"encode: ours {ours:,.0f}/min, plain fp32 batch 32 {baseline:,.0f}/min ({ours / baseline:.1f}x)")
    return {"encode_sentences_per_min": ours, "baseline_encode_sentences_per_min": baseline,
            "encode_speedup": ours / baseline, "encode_sentences": len(texts),
            "baseline_encode_sentences": len(baseline_texts)}


def pairs_per_s(model, pairs, args, device: str, ours: bool) -> float:
    """Pairs per second over the timed steps of one short training run."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    from alias_label.training import make_trainer

    steps = args.warmup_steps + args.train_steps
    rows = pairs[:steps * args.batch_size * 2]
    dataset = Dataset.from_dict({"alias": [a for a, _ in rows], "canonical": [lab for _, lab in rows]})
    stamps = {}

    class Clock(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            if state.global_step in (args.warmup_steps, steps):
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                stamps[state.global_step] = time.perf_counter()

    with tempfile.TemporaryDirectory() as out:
        if ours:
            settings = argparse.Namespace(epochs=1, batch_size=args.batch_size, lr=1e-5, warmup_ratio=0.0, seed=0,
                                          save_steps=10**9, stop_after_steps=None)
            trainer = make_trainer(model, dataset, MultipleNegativesRankingLoss(model), settings, Path(out) / "m",
                                   device, [Clock()], unique_batches=True)
        else:
            plain = SentenceTransformerTrainingArguments(output_dir=out, per_device_train_batch_size=args.batch_size,
                                                         learning_rate=1e-5, save_strategy="no", report_to="none",
                                                         use_cpu=not device.startswith("cuda"))
            trainer = SentenceTransformerTrainer(model=model, args=plain, train_dataset=dataset,
                                                 loss=MultipleNegativesRankingLoss(model), callbacks=[Clock()])
        trainer.args.max_steps = steps
        trainer.train()
    return args.train_steps * args.batch_size / (stamps[steps] - stamps[args.warmup_steps])


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


def main(args) -> dict:
    device = pick_device(args.device)
    shape = TINY if args.smoke else E5_LARGE
    texts, pairs = texts_of(args.sentences)
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model(shape, Path(tmp), device)
        figures = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
                   "precision": precision_name(device), "model_shape": shape,
                   "mean_tokens_per_text": float(np.mean([len(t) for t in model.tokenizer(texts[:5000])["input_ids"]]))}
        figures.update(encode_figures(model, texts, args, device))
        figures.update(agreement_check(model, pairs, args, device))
        baseline = pairs_per_s(random_model(shape, Path(tmp), device), pairs, args, device, ours=False)
        ours = pairs_per_s(random_model(shape, Path(tmp), device), pairs, args, device, ours=True)
    print(f"training at batch {args.batch_size}: ours {ours:,.0f} pairs/s, plain {baseline:,.0f} pairs/s "
          f"({ours / baseline:.1f}x)")
    figures.update({"train_pairs_per_s": ours, "baseline_train_pairs_per_s": baseline,
                    "train_speedup": ours / baseline, "train_batch_size": args.batch_size})
    save_results("gpu_throughput_smoke" if args.smoke else "gpu_throughput", figures, args.results_dir)
    return figures


if __name__ == "__main__":
    main(parse_args())
