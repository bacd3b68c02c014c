"""Student: distil the teacher into a smaller, faster bi-encoder.

Reads   models/trained/alias_label_teacher/ and the split in data/processed/ it was trained on;
        data/cache/teacher_{label,alias}_embs.npy when their fingerprint matches (else re-encodes).
Mines   with --objective cosine, each train alias's top-k non-gold labels from the full
        alias x label teacher cosine.
Trains  --objective embedding-mse (default): the student regresses onto the teacher's embeddings
        (with a projection when the dimensions differ); its indexes keep the teacher's label
        and alias vectors, and the student encodes only the queries (--index-vectors teacher);
        --objective cosine: CosineSimilarityLoss, the student's cosine on (alias, gold) and
        (alias, hard negative) pairs regresses onto the teacher's (the design's recipe), and the
        student encodes its own indexes (--index-vectors student).
        --augment (all kinds by default) adds the aliases alias_label.train.augment generates from
        train-side labels as more texts to imitate (embedding-mse), encoded by the teacher once
        and cached in data/cache/teacher_generated_alias_embs.npy.
Writes  models/trained/alias_label_student/  model + training_config.json + metrics.json
        faiss/labels_distilled.index, faiss/aliases_distilled.index  (+ .json sidecars)
        logs/metrics/student.jsonl  per-epoch validation top-1 and teacher agreement
        models/trained/alias_label_student/calibration.json  hybrid weight and abstain threshold (val)

Writes  also models/trained/alias_label_student/indexes.json (where its indexes are)
Reuses  a saved student trained with the same flags on the same data from the same teacher, and
        what was written after it when that is current too (--retrain trains anew).

Example:
    python scripts/distill_model.py --student-layers 2 --epochs 3
    python scripts/distill_model.py --objective cosine --hard-negatives 5   # the design's recipe
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import numpy as np

from alias_label.data.split import load_split
from alias_label.errors import UserError, check_bounds, run_main
from alias_label.index.bundle import fix_command, require_trained, write_indexes
from alias_label.index.dense import add_index_args, build_index
from alias_label.index.tables import build_label_index, encode_candidates
from alias_label.io import read_json, save_run_args, setup_logging, sha256_of, timed, write_json
from alias_label.metrics import classes_of
from alias_label.models.encode import encode
from alias_label.models.load import embedding_dim, load_model, model_fingerprint, pick_device, precision_name
from alias_label.models.processes import require_one_process
from alias_label.paths import paths
from alias_label.search.calibration import add_calibration_args, calibrate, check_target
from alias_label.search.scoring import score_split
from alias_label.search.searchers import Searcher
from alias_label.train.augment import AUGMENTATIONS
from alias_label.train.distill import (
    distillation_pairs,
    generated_embeddings,
    generated_texts,
    imitated_texts,
    reduce_layers,
    teacher_embeddings,
    with_projection,
)
from alias_label.train.reuse import FINISHED, FINISHED_STEP, RECORD, TRAINED, flags_of, saved_state
from alias_label.train.trainer import (
    add_training_args,
    check_training_args,
    log_validation,
    make_trainer,
    prepare_checkpoints,
    run_training,
    save_model_atomically,
    training_record,
    validation_callback,
)

NAME = "distill_model"
# The teacher's folder is where it is now; its fingerprint says whether it is the same teacher.
TEACHER_PATH = frozenset({"teacher"})
log = logging.getLogger(NAME)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # The learning rate, the generated aliases and the depth come from the student sweeps (docs/student.md).
    add_training_args(parser, epochs=10, batch_size=64, lr=1e-3)
    parser.add_argument("--teacher", type=Path, default=None,
                        help="the trained teacher folder (default: models/trained/alias_label_teacher/)")
    parser.add_argument("--student-base", default=None,
                        help="start the student from this local folder or hub id instead of the layer-reduced "
                             "teacher, e.g. intfloat/e5-base-v2")
    parser.add_argument("--student-layers", type=int, default=None,
                        help="transformer layers the layer-reduced teacher keeps, evenly spaced (default: half the "
                             "teacher's, rounded up, as e5-base is half of e5-large: 3 of MiniLM's 6); fewer layers "
                             "answer faster and agree less with the teacher (docs/student.md)")
    # Embedding MSE with the teacher's index vectors kept more of the teacher than the design's
    # cosine recipe on the same teacher and split (docs/student.md).
    parser.add_argument("--objective", default="embedding-mse", choices=["cosine", "embedding-mse"],
                        help="embedding-mse: match the teacher's embeddings; cosine: match the teacher's cosine on "
                             "gold and hard-negative pairs, the design's recipe (default: embedding-mse)")
    parser.add_argument("--augment", nargs="+", default=None, choices=[*AUGMENTATIONS, "none"],
                        metavar="KIND",
                        help="also imitate the teacher on the aliases generated from train-side labels, any of "
                             f"{', '.join(AUGMENTATIONS)}, or none; embedding-mse only. More texts make each epoch "
                             "longer (default: all four; with --objective cosine, none)")
    parser.add_argument("--hard-negatives", type=int, default=5,
                        help="with --objective cosine, non-gold labels mined per train alias from the teacher's "
                             "similarity (default: 5)")
    parser.add_argument("--processed-dir", type=Path, default=None,
                        help="the split the teacher was trained on (default: data/processed/)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="teacher embedding cache (default: data/cache/)")
    parser.add_argument("--refresh-cache", action="store_true",
                        help="re-encode with the teacher even on a cache hit (labels, aliases, generated aliases)")
    parser.add_argument("--output", type=Path, default=None,
                        help="where the student goes (default: models/trained/alias_label_student/)")
    parser.add_argument("--index-dir", type=Path, default=None, help="where the FAISS indexes go (default: faiss/)")
    add_calibration_args(parser)
    add_index_args(parser)
    research = parser.add_argument_group("research options", "kept to rerun the comparisons in docs/student.md")
    research.add_argument("--index-vectors", default=None, choices=["student", "teacher"],
                          help="teacher: the indexes keep the teacher's vectors and the student encodes only the "
                               "queries, which needs --objective embedding-mse; student: the student encodes labels "
                               "and aliases for its indexes (default: teacher for embedding-mse, student for cosine)")
    args = parser.parse_args(argv)
    check_target(parser, args)
    check_training_args(parser, args)
    check_bounds(parser, args, at_least={"student_layers": 1, "hard_negatives": 0, "rescore": 0})
    if args.index_vectors is None:
        args.index_vectors = "teacher" if args.objective == "embedding-mse" else "student"
    args.augment = augment_kinds(parser, args)
    if args.index_vectors == "teacher" and args.objective != "embedding-mse":
        parser.error("--index-vectors teacher searches the teacher's vectors with student queries, so the student "
                     "must learn the teacher's embedding space: add --objective embedding-mse")
    args.teacher = Path(args.teacher or paths().teacher)
    args.output = Path(args.output or paths().student)
    return args


def augment_kinds(parser, args) -> list[str]:
    """The generated aliases to train on: all kinds unless told otherwise; none for the cosine objective."""
    if args.augment is None:
        return list(AUGMENTATIONS) if args.objective == "embedding-mse" else []
    if "none" in args.augment:
        if len(args.augment) > 1:
            parser.error(f"--augment {' '.join(args.augment)}: give kinds or none, not both")
        return []
    if args.objective != "embedding-mse":
        parser.error("--augment adds texts for the student to imitate the teacher's embeddings of: "
                     "use it with --objective embedding-mse, or leave it out")
    return args.augment


def check_teacher(args, split) -> None:
    """Refuse a teacher trained on another split, from its record, before anything loads."""
    trained_on = require_trained(args.teacher, "teacher")["data_fingerprint"]
    if trained_on != split.fingerprint:
        raise UserError(f"the teacher at {args.teacher} was trained on split {trained_on}, but the split here is "
                        f"{split.fingerprint}. Retrain it on this split with: {fix_command(args.teacher, 'teacher')}")


def build_student(args, teacher, device: str) -> tuple[object, dict]:
    """The layer-reduced teacher by default; any model through --student-base."""
    if args.student_base:
        student = load_model(args.student_base, device, teacher.max_seq_length)
        for kind, prompt in teacher.prompts.items():
            student.prompts.setdefault(kind, prompt)
        info = {"student_base": args.student_base}
    else:
        student = load_model(args.teacher, device)
        info = {"student_base": "layer-reduced teacher", "kept_layers": reduce_layers(student, args.student_layers)}
    if args.objective == "embedding-mse":
        student = with_projection(student, embedding_dim(teacher))
    return student, info


def generated_queries(args, split, teacher) -> tuple[list[str], np.ndarray]:
    """The --augment aliases and the teacher's embeddings of them (none without --augment)."""
    if not args.augment:
        return [], np.empty((0, embedding_dim(teacher)), dtype=np.float32)
    texts = generated_texts(split, args.augment)
    log.info("augmentation: %d generated aliases (%s)", len(texts), ", ".join(args.augment))
    return texts, generated_embeddings(teacher, args.teacher, split, texts, args.cache_dir, args.refresh_cache)[0]


def training_dataset(args, split, embeddings, generated: tuple[list[str], np.ndarray], device: str):
    """Training rows for the chosen objective; the trainer applies the prompts per column."""
    from datasets import Dataset

    if args.objective == "cosine":
        pairs = distillation_pairs(split, embeddings, args.hard_negatives, device)
        log.info("distillation pairs: %d (%d gold, %d hard negatives); teacher cosine gold=%.3f negatives=%.3f",
                 len(pairs), pairs["gold"].sum(), (~pairs["gold"]).sum(), pairs.loc[pairs["gold"], "score"].mean(),
                 pairs.loc[~pairs["gold"], "score"].mean())
        pairs = pairs.sample(frac=1.0, random_state=args.seed)
        return Dataset.from_dict({"alias": pairs["alias"].tolist(), "canonical": pairs["label"].tolist(),
                                  "score": pairs["score"].astype(np.float32).tolist()})
    # embedding-mse: every train alias and generated alias (as queries) and every label and label key
    # (as documents) with its teacher vector; more texts to imitate is what moved agreement in the sweep.
    texts, generated_embs = generated
    alias_rows, imitated = imitated_texts(split, texts)
    return {
        "queries": Dataset.from_dict({"text": imitated["queries"],
                                      "label": np.vstack([embeddings["aliases"][alias_rows],
                                                          generated_embs]).tolist()}),
        "documents": Dataset.from_dict({"text": imitated["documents"],
                                        "label": np.vstack([embeddings["labels"], embeddings["label_keys"]]).tolist()}),
    }


def training_texts_fingerprint(dataset) -> str:
    """What the student learns from, so that no run goes on from the checkpoints of a run on other texts."""
    parts = dataset.values() if isinstance(dataset, dict) else [dataset]
    return sha256_of(*(text for part in parts for column in part.column_names
                       if getattr(part.features[column], "dtype", None) == "string" for text in part[column]))


def make_loss(args, student):
    from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss, MSELoss

    if args.objective == "cosine":
        return CosineSimilarityLoss(student)
    return {"queries": MSELoss(student), "documents": MSELoss(student)}


def trainer_prompts(args, student) -> dict | None:
    if not student.prompts:
        return None
    query, document = student.prompts.get("query", ""), student.prompts.get("document", "")
    if args.objective == "cosine":
        return {"alias": query, "canonical": document}
    return {"queries": query, "documents": document}


def agreement(split, student_top1: np.ndarray, teacher_top1: np.ndarray) -> float:
    """Share of aliases where student and teacher answer the same label, up to case and accents."""
    classes = split.label_classes
    return float(np.mean(classes_of(student_top1, classes) == classes_of(teacher_top1, classes)))


def teacher_top1(split, embeddings, split_name: str, keys: str) -> np.ndarray:
    """The teacher's top-1 label row for each alias of a split, from its cached embeddings."""
    alias_rows = split.alias_rows(split.pairs(split_name)["alias"])
    _, ids = build_label_index(embeddings, split, keys).search(embeddings["aliases"][alias_rows], 1)
    return ids[:, 0]


def student_validation(split, teacher_val_top1: np.ndarray, keys: str, teacher_embeddings: dict | None = None):
    """Val top-1 and agreement per epoch; with the teacher's label vectors, only queries are encoded."""
    def evaluate(model) -> dict:
        if teacher_embeddings is not None:
            label_index = build_label_index(teacher_embeddings, split, keys)
        else:
            # Like the teacher's, per-epoch validation of a student with its own vectors skips the label keys.
            label_index = build_index(encode(model, split.labels["label"], kind="document"))
        metrics, _, ranked = score_split(Searcher("student", label_index, None, model), split, "val")
        metrics["agreement"] = agreement(split, ranked[:, 0], teacher_val_top1)
        return metrics

    return evaluate


def index_and_validate(student, split, embeddings: dict, args) -> dict:
    """Write the student's indexes and calibration; its val metrics and agreement with the teacher.

    With --index-vectors teacher the candidates keep the teacher's vectors and the student encodes
    only queries. The test split is left to scripts/evaluate_student.py, the one scorer of test figures.
    """
    index_embeddings = embeddings if args.index_vectors == "teacher" else encode_candidates(student, split)
    write_indexes(index_embeddings, split, args.output, "student", args.index_dir, args)
    dense = Searcher("student", build_label_index(index_embeddings, split, args.label_keys),
                     build_index(index_embeddings["aliases"]), student)
    calibrate(args.output, "student", split, dense, args.target_precision, args.rerank_candidates,
              args.cross_encoder)
    metrics, _, ranked = score_split(dense, split, "val")
    metrics["agreement"] = agreement(split, ranked[:, 0], teacher_top1(split, embeddings, "val", args.label_keys))
    return metrics


def train_student(args, split, teacher, embeddings: dict, cache_status: str, device: str, timings: dict):
    """The student trained and saved, and its progress; or (None, where --stop-after-steps cut it short)."""
    with timed("training_data", timings, log):
        dataset = training_dataset(args, split, embeddings, generated_queries(args, split, teacher), device)
    student, student_info = build_student(args, teacher, device)
    log.info("student: %s objective=%s device=%s precision=%s", student_info, args.objective, device,
             precision_name(device))

    identity = {"data_fingerprint": split.fingerprint, "teacher_fingerprint": model_fingerprint(args.teacher),
                "objective": args.objective, "index_vectors": args.index_vectors,
                "training_texts": training_texts_fingerprint(dataset), **student_info}
    resume = prepare_checkpoints(args.output, args.resume, identity, flags=flags_of(vars(args), TEACHER_PATH),
                                 retrain=args.retrain)
    teacher_vectors = embeddings if args.index_vectors == "teacher" else None
    # Agreement compares like with like: the per-epoch label index of a student with its own vectors has no keys.
    val_top1 = teacher_top1(split, embeddings, "val", args.label_keys if teacher_vectors is not None else "label")
    callback = validation_callback("student", student_validation(split, val_top1, args.label_keys, teacher_vectors),
                                   args.early_stopping_patience)
    trainer = make_trainer(student, dataset, make_loss(args, student), args, args.output, device, [callback],
                           trainer_prompts(args, student))
    with timed("train", timings, log):
        if not run_training(trainer, resume, args.stop_after_steps):
            return None, {"stopped_at_step": trainer.state.global_step}
    progress = {"epoch": trainer.state.epoch, "step": trainer.state.global_step}
    save_model_atomically(student, args.output, training_record(
        "student", args, student, split, device, teacher=str(args.teacher), cache=cache_status, progress=progress,
        **identity))
    return student, progress


def main(args: argparse.Namespace) -> dict:
    setup_logging(NAME)
    save_run_args(NAME, args)
    require_one_process("scripts/distill_model.py")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    timings: dict[str, float] = {}
    split = load_split(args.processed_dir)
    device = pick_device(args.device)
    check_teacher(args, split)
    saved = saved_state(args.output, "student", {"data_fingerprint": split.fingerprint,
                                                 "teacher_fingerprint": model_fingerprint(args.teacher)},
                        args, ignore=TEACHER_PATH)
    if saved == FINISHED_STEP:
        return read_json(args.output / FINISHED)
    teacher = load_model(args.teacher, device)
    with timed("teacher_cache", timings, log):
        embeddings, cache_status = teacher_embeddings(teacher, args.teacher, split, args.cache_dir,
                                                      args.refresh_cache)
    if saved == TRAINED:
        student, progress = load_model(args.output, device), read_json(args.output / RECORD).get("progress", {})
    else:
        student, progress = train_student(args, split, teacher, embeddings, cache_status, device, timings)
        if student is None:
            return progress
    with timed("index_and_validate", timings, log):
        metrics = {"val": index_and_validate(student, split, embeddings, args)}
    log_validation("student", progress.get("epoch", 0.0), progress.get("step", 0), metrics["val"])
    log.info("student ready: score it on test with: python scripts/evaluate_student.py")
    write_json(args.output / FINISHED, {**metrics, "timings_s": timings})
    return metrics


if __name__ == "__main__":
    run_main(main, parse_args(), resumable=True)
