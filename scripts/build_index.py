"""Rebuild a trained model's FAISS indexes with another index type, streaming the encoding.

Texts are encoded in chunks into a memory-mapped .npy and each chunk is added to the index as it
arrives, so memory stays flat however many labels there are. Use it to move to an approximate
or compressed index (benchmarks/README.md, "Index types and scale") without retraining.

Reads   data/processed/ (labels and aliases), models/trained/alias_label_{teacher,student}/
Writes  faiss/{labels,aliases}{,_distilled}.index with sidecars (type, factory string, parameters),
        plus {...}.index.vectors.npy, the float32 vectors, when the index reranks from them;
        the model's indexes.json (where they are) and calibration.json, refitted, since the scores it
        was fitted on may have moved

Under `accelerate launch`, the texts are split across the processes (GPUs, nodes) in whole chunks;
each encodes its share, and the main process gathers them in order and writes every file, so the
indexes are those a single process would write (--shards says how the parts travel).

With --vectors-from teacher, a student distilled with --objective embedding-mse gets indexes of
the teacher's cached vectors (data/cache/; re-encoded with the teacher when stale), searched with its
own query embeddings.

Example:
    python scripts/build_index.py --model teacher --index hnsw
    python scripts/build_index.py --model student --index ivfpq --rescore 8
    python scripts/build_index.py --model student --vectors-from teacher
    accelerate launch --num_processes 4 scripts/build_index.py --model teacher --index hnsw
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from alias_label.data.split import load_split
from alias_label.errors import UserError, check_bounds, run_main
from alias_label.index.bundle import model_folder, record_indexes, require_trained
from alias_label.index.dense import (
    DenseIndex,
    add_index_args,
    build_index,
    save_index,
    sidecar_path,
    spec_from_args,
    vectors_path,
)
from alias_label.index.stream import encode_across_processes
from alias_label.index.tables import index_paths, index_table_meta, index_vectors
from alias_label.io import save_run_args, setup_logging
from alias_label.models.encode import STREAM_CHUNK_ROWS
from alias_label.models.load import embedding_dim, load_model, pick_device
from alias_label.models.processes import Processes
from alias_label.search.calibration import add_calibration_args, calibrate, check_target
from alias_label.search.retriever import load_dense
from alias_label.train.distill import teacher_embeddings

NAME = "build_index"
log = logging.getLogger(NAME)
KIND_OF = {"labels": "document", "aliases": "query"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="teacher",
                        help="teacher, student, or a trained model folder whose indexes to rebuild (default: teacher)")
    add_index_args(parser)
    parser.add_argument("--vectors-from", default=None, choices=["teacher"],
                        help="index the teacher's cached vectors instead of encoding with --model: the teacher's "
                             "own, or a student trained with --objective embedding-mse, which shares its space")
    parser.add_argument("--chunk-rows", type=int, default=STREAM_CHUNK_ROWS,
                        help=f"texts encoded per chunk (default: {STREAM_CHUNK_ROWS})")
    parser.add_argument("--batch-size", type=int, default=128, help="texts per forward pass (default: 128)")
    parser.add_argument("--processed-dir", type=Path, default=None, help="the split (default: data/processed/)")
    parser.add_argument("--index-dir", type=Path, default=None,
                        help="where the indexes go; the model folder's indexes.json records it (default: faiss/)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="where the model runs; under accelerate launch, cuda is each process's own GPU")
    parser.add_argument("--shards", default="files", choices=["files", "memory"],
                        help="under accelerate launch, how each process's vectors reach the main one: memory-mapped "
                             "files beside the index (default; on several nodes the index folder must be shared), "
                             "or through the process group in memory (no shared disk needed)")
    add_calibration_args(parser)
    args = parser.parse_args(argv)
    check_target(parser, args)
    check_bounds(parser, args, at_least={"chunk_rows": 1, "batch_size": 1, "rescore": 0})
    return args


def build_one(model, texts: list[str], kind: str, target: Path, args, processes: Processes) -> DenseIndex | None:
    """The index of ``texts``, encoded across the processes; None on all but the main process."""
    spec = spec_from_args(args, len(texts), embedding_dim(model))
    index = None
    if processes.is_main:
        # From here until the new sidecar is written, the old one would describe files being replaced.
        sidecar_path(target).unlink(missing_ok=True)
        index = DenseIndex.empty(embedding_dim(model), spec)
    # Rescored indexes keep the vectors beside them; others need them only while the index is built.
    vectors_file = vectors_path(target) if spec.rescore else target.with_name(f".{target.name}.vectors.tmp.npy")
    vectors = encode_across_processes(model, texts, KIND_OF[kind], vectors_file, processes, index, args.shards,
                                      args.chunk_rows, args.batch_size)
    if index is None:
        return None
    log.info("%s: %d texts encoded by %d process%s", target.name, len(texts), processes.world,
             "" if processes.world == 1 else f"es, gathered through {args.shards}")
    if spec.rescore:
        index.vectors = vectors
    else:
        del vectors
        vectors_file.unlink()
    return index


def teacher_vectors(split, model_dir: Path, config: dict, device: str) -> dict:
    """The teacher's cached vectors, for the teacher or a student that learnt its space; re-encoded when stale."""
    if config.get("role") == "student" and config.get("objective") != "embedding-mse":
        raise UserError(f"{model_dir} was distilled with --objective {config.get('objective')}, so its queries do not "
                        "live in the teacher's space. Distil with: python scripts/distill_model.py --objective "
                        "embedding-mse")
    teacher_dir = Path(config["teacher"]) if config.get("role") == "student" else model_dir
    require_trained(teacher_dir)
    return teacher_embeddings(load_model(teacher_dir, device), teacher_dir, split)[0]


def main(args: argparse.Namespace) -> dict:
    with Processes.launched(pick_device(args.device)) as processes:
        return build_all(args, processes)


def build_all(args: argparse.Namespace, processes: Processes) -> dict:
    """Every index of the model, its record and calibration; the work of one of the launched processes."""
    setup_logging(NAME)
    if processes.is_main:
        save_run_args(NAME, args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    split = load_split(args.processed_dir)
    model_dir = model_folder(args.model)
    config = require_trained(model_dir)
    role, device = config.get("role", "teacher"), processes.device
    if args.vectors_from == "teacher" and not processes.is_main:
        return {}  # nothing to encode: the main process indexes the cached vectors
    cached = teacher_vectors(split, model_dir, config, device) if args.vectors_from == "teacher" else None
    model = None if cached else load_model(model_dir, device)
    written = {}
    for kind, target in index_paths(role, args.index_dir).items():
        meta = index_table_meta(split, kind, model_dir, role, args.label_keys)
        if cached:
            vectors = index_vectors(cached, kind, args.label_keys)
            index = build_index(vectors, spec_from_args(args, *vectors.shape))
            meta["vectors_from"] = "teacher"
        else:
            index = build_one(model, meta["texts"], kind, target, args, processes)
        if index is not None:
            save_index(index, target, meta)
            written[kind] = target
    if not processes.is_main:
        return {}
    record_indexes(model_dir, written)
    dense = load_dense(model_dir, device, int8=False)
    calibrate(model_dir, role, split, dense.searcher, args.target_precision, args.rerank_candidates,
              args.cross_encoder)
    return written


if __name__ == "__main__":
    run_main(main, parse_args())
