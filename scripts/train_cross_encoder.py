"""Train a cross-encoder on a trained model's hard negatives, then refit its reranker with it.

A cross-encoder reads an alias and a candidate label together. Its score, on each alias's top
candidates, joins the reranker's features: the reranked search then ranks better and, above all,
knows better when it is right, so the calibrated abstain answers more aliases at the target
precision (docs/rerank.md). It costs a forward pass per scored candidate at lookup time.

The teacher's trains from the bundled all-MiniLM-L6-v2 and scores each alias's 20 best candidates
by fused score. The student's, made for its fast CPU lookups, starts from its teacher's
cross-encoder with half the layers, as the student itself does, scores 3 candidates, and runs
int8 where the student does. Either trains on a seeded sample of the train aliases, each against
its gold label and the wrong candidates of the model's first stage with the highest fused
score, with binary cross-entropy. The reranker is then refitted on validation as
``calibrate.py`` fits it. A finished cross-encoder whose record matches the flags, the data and the
model is reused, so a run stopped during the refit resumes there, and a reranker already refitted
with it and these flags is kept as it is.

Reads   data/processed/, the trained model folder (default: the teacher) with its indexes and calibration;
        for a student, its teacher's cross-encoder
Writes  <model folder>/cross_encoder/  the cross-encoder + training_config.json (its record)
        <model folder>/calibration.json, reranker.json, reranker_boosters.json, reranker_confidence.json
            refitted with its scores

Example:
    python scripts/train_cross_encoder.py --model student --train-aliases 1500
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

from alias_label.data.split import load_split
from alias_label.errors import UserError, run_main
from alias_label.io import read_json, save_run_args, setup_logging
from alias_label.models.load import model_fingerprint, pick_device, resolve_model
from alias_label.models.processes import require_one_process
from alias_label.search.calibration import add_calibration_args, calibrate, check_target, fitted_as
from alias_label.search.cross import CROSS_TOP, STUDENT_CROSS_TOP, cross_dir, has_cross_encoder
from alias_label.search.rerank import FirstStage, pairs_table
from alias_label.search.retriever import check_split, load_dense
from alias_label.train.cross_encoder import mined_pairs, train_cross_encoder, train_sample
from alias_label.train.distill import default_student_layers
from alias_label.train.trainer import save_model_atomically

NAME = "train_cross_encoder"
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher",
                        help="teacher, student, or a trained model folder whose first stage mines the negatives and "
                             "whose reranker is refitted (default: teacher)")
    parser.add_argument("--base", default=None,
                        help="the cross-encoder's starting model: a local folder or hub id (default: the bundled "
                             "all-MiniLM-L6-v2 for a teacher; for a student, its teacher's cross-encoder when it has "
                             "one)")
    parser.add_argument("--layers", type=int, default=None,
                        help="transformer layers kept from the base, evenly spaced; fewer make lookups faster "
                             "(default: all for a teacher, half for a student)")
    parser.add_argument("--train-aliases", type=int, default=1500,
                        help="train aliases trained on, a seeded sample; 0 for all. More cost training time in "
                             "proportion (default: 1500)")
    parser.add_argument("--negatives", type=int, default=5, help="hard negatives per train alias (default: 5)")
    parser.add_argument("--epochs", type=float, default=1, help="training epochs (default: 1)")
    parser.add_argument("--batch-size", type=int, default=32, help="training pairs per step (default: 32)")
    parser.add_argument("--lr", type=float, default=3e-5, help="learning rate (default: 3e-5)")
    parser.add_argument("--max-length", type=int, default=48,
                        help="tokens per (alias, label) pair; names are short, so more only costs time (default: 48)")
    parser.add_argument("--top", type=int, default=None,
                        help="candidates per alias the cross-encoder scores at lookup time, the first by the "
                             f"hybrid's fused score; each costs a forward pass (default: {CROSS_TOP} for a teacher, "
                             f"{STUDENT_CROSS_TOP} for a student)")
    parser.add_argument("--seed", type=int, default=13, help="sampling and training seed (default: 13)")
    parser.add_argument("--retrain", action="store_true",
                        help="train anew even when a matching cross-encoder is already saved")
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the cross-encoder trains (default: auto); lookups use the retriever's device")
    add_calibration_args(parser, cross_encoder_flag=False)
    args = parser.parse_args(argv)
    check_target(parser, args)
    for flag in ("negatives", "top", "max_length", "batch_size", "layers"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} {getattr(args, flag)} must be at least 1")
    if args.train_aliases < 0 or args.epochs <= 0 or args.lr <= 0:
        parser.error("--train-aliases must be 0 or more, and --epochs and --lr above 0")
    return args


def teachers_cross_encoder(model_dir: Path) -> Path | None:
    """A student's teacher's cross-encoder folder, when the student has a teacher that has one."""
    teacher = read_json(Path(model_dir) / "training_config.json").get("teacher")
    return cross_dir(teacher) if teacher and has_cross_encoder(teacher) else None


def resolve_role_defaults(args: argparse.Namespace, role: str, model_dir: Path) -> None:
    """Fill --base, --layers and --top left unset: as given for a teacher; for a student, its teacher's
    cross-encoder with half the layers, scoring few candidates, to keep its lookups fast."""
    from transformers import AutoConfig

    student = role == "student"
    if args.base is None:
        base = teachers_cross_encoder(model_dir) if student else None
        args.base = str(base) if base is not None else "all-MiniLM-L6-v2"
    base_layers = AutoConfig.from_pretrained(base_path(args)).num_hidden_layers
    if args.layers is None:
        args.layers = default_student_layers(base_layers) if student else base_layers
    if args.layers > base_layers:
        raise UserError(f"--layers {args.layers}: the base {args.base} has {base_layers} layers")
    if args.top is None:
        args.top = STUDENT_CROSS_TOP if student else CROSS_TOP


def base_path(args: argparse.Namespace) -> str:
    """What ``CrossEncoder`` loads for --base: the bundled MiniLM's folder, a local folder or a hub id."""
    return resolve_model(args.base)


def settings_of(args: argparse.Namespace, model_dir: Path, data_fingerprint: str) -> dict:
    """What makes a cross-encoder: the flags that shape it, its base, the model and the data it was mined from."""
    return {"role": "cross_encoder", "base_model": args.base, "layers": args.layers,
            "base_model_fingerprint": model_fingerprint(base_path(args)),
            "bi_encoder_fingerprint": model_fingerprint(model_dir),
            "data_fingerprint": data_fingerprint, "train_aliases": args.train_aliases, "negatives": args.negatives,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "max_length": args.max_length,
            "top": args.top, "seed": args.seed, "candidates_per_channel": args.rerank_candidates}


def reusable(model_dir: Path, settings: dict) -> bool:
    """Whether the saved cross-encoder was trained with these very settings."""
    if not has_cross_encoder(model_dir):
        return False
    record = read_json(cross_dir(model_dir) / "training_config.json")
    return {key: record.get(key) for key in settings} == settings


def train(dense, split, args, settings: dict) -> None:
    """Mine the negatives with the model's first stage, train the cross-encoder and save it with its record."""
    import sentence_transformers

    first_stage = FirstStage.build(dense.searcher, dense.candidates, dense.calibration["fusion"],
                                   args.rerank_candidates)
    sample = train_sample(split, args.train_aliases, args.seed)
    log.info("mining %d hard negatives for each of %d train aliases", args.negatives, len(sample))
    table = pairs_table(first_stage, split, sample)
    labels = dense.candidates.labels["label"].to_numpy()
    pairs = mined_pairs(table, sample["alias"].tolist(), sample["label"].tolist(), labels, args.negatives)
    device = pick_device(args.device)
    log.info("training the cross-encoder on %d pairs on %s", len(pairs["label"]), device)
    start = time.perf_counter()
    cross = train_cross_encoder(pairs, base_path(args), device, args.epochs, args.batch_size, args.lr,
                                args.max_length, args.seed, args.layers)
    record = {**settings, "train_pairs": len(pairs["label"]), "device": device,
              "train_s": round(time.perf_counter() - start, 1),
              "sentence_transformers": sentence_transformers.__version__}
    save_model_atomically(cross, cross_dir(dense.model_dir), record)
    log.info("wrote %s (%.0f s of training)", cross_dir(dense.model_dir), record["train_s"])


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/train_cross_encoder.py")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    split = load_split(args.processed_dir)
    # float32, as calibration fits: the negatives and the refit read the scores the indexes were built with.
    dense = load_dense(args.model, "cpu", int8=False, calibrated=True)
    check_split(dense, split.fingerprint)
    resolve_role_defaults(args, dense.name, dense.model_dir)
    settings = settings_of(args, dense.model_dir, split.fingerprint)
    if reusable(dense.model_dir, settings) and not args.retrain:
        log.info("reusing %s, trained with these settings (--retrain to train anew)", cross_dir(dense.model_dir))
        if fitted_as(dense.model_dir, dense.name, split.fingerprint, args.target_precision, args.rerank_candidates,
                     cross_encoder=True):
            log.info("the reranker of %s is already fitted with it and these flags; nothing to do", dense.model_dir)
            return dense.calibration
    else:
        train(dense, split, args, settings)
    return calibrate(dense.model_dir, dense.name, split, dense.searcher, args.target_precision,
                     args.rerank_candidates, cross_encoder=True)


if __name__ == "__main__":
    run_main(main, parse_args())
