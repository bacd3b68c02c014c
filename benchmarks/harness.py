"""What every benchmark shares: the machine it ran on, percentiles, and the JSON it leaves behind."""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from alias_label.data.split import load_split
from alias_label.evaluate.timing import taking_turns as turns
from alias_label.index.cache import cache_paths
from alias_label.index.dense import IndexSpec, build_index, save_index
from alias_label.io import write_json
from alias_label.models.encode import encode
from alias_label.models.quantize import cpu_has_vnni
from alias_label.paths import REPO_ROOT
from alias_label.search.cross import has_cross_encoder, load_cross_encoder
from alias_label.search.rerank import CANDIDATES_PER_CHANNEL, FirstStage, columns_of, training_table
from alias_label.search.retriever import check_split, load_dense

RESULTS = REPO_ROOT / "benchmarks" / "results"
# Index types by name: (kind, quantisation) of alias_label.index.dense.IndexSpec.
INDEX_TYPES = {"flat": ("flat", "none"), "flat-int8": ("flat", "int8"), "flat-int4": ("flat", "int4"),
               "hnsw": ("hnsw", "none"), "hnsw-int8": ("hnsw", "int8"), "hnsw-int4": ("hnsw", "int4"),
               "ivf": ("ivf", "none"), "ivf-int8": ("ivf", "int8"), "ivf-int4": ("ivf", "int4"),
               "ivfpq": ("ivfpq", "none"), "ivf-binary": ("ivf", "binary"), "flat-binary": ("flat", "binary")}


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            # int8 speed, and every float's last bits, differ between CPUs with and without VNNI.
            "avx512_vnni": cpu_has_vnni()}


def percentiles(milliseconds: list[float]) -> dict:
    return {"p50_ms": float(np.percentile(milliseconds, 50)), "p95_ms": float(np.percentile(milliseconds, 95))}


def summary(fits: list[dict]) -> dict:
    """Mean, standard deviation and range of each figure over several fits (None where a fit has none)."""
    out = {}
    for key in fits[0]:
        values = [fit[key] for fit in fits if fit[key] is not None]
        out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "min": float(np.min(values)),
                    "max": float(np.max(values))}
    return out


def save_results(name: str, figures: dict, results_dir: Path | None = None) -> Path:
    """benchmarks/results/<name>.json: the exact command, the machine, then the figures."""
    target = Path(results_dir or RESULTS) / f"{name}.json"
    write_json(target, {"benchmark": name, "command": " ".join(["python", *sys.argv]), "machine": machine(), **figures})
    print(f"wrote {target}")
    return target


def timed_ms(function, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return (time.perf_counter() - start) * 1000, result


def taking_turns(models: dict, aliases: list[str], measure, block: int = 10) -> dict[str, list]:
    """``measure(model, alias)`` for every alias and model, the models taking turns a block at a time
    (``alias_label.evaluate.timing.taking_turns``), after a warm-up encode each."""
    for model in models.values():
        encode(model, aliases[:3], "query")
    return turns(models, aliases, measure, block)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def lift(rows: np.ndarray, dim: int, seed: int) -> np.ndarray:
    """Map to ``dim`` dimensions with a random orthonormal basis: every cosine stays the same."""
    if dim == rows.shape[1]:
        return rows
    basis, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, rows.shape[1])))
    return np.ascontiguousarray(rows @ basis.T.astype(np.float32))


def synthetic(size: str, dim: int, args) -> tuple[np.ndarray, np.ndarray]:
    labels = np.load(cache_paths()["labels"], mmap_mode="r")
    aliases = np.load(cache_paths()["aliases"], mmap_mode="r")
    rng = np.random.default_rng(args.seed)
    queries = np.asarray(aliases[rng.choice(len(aliases), min(args.queries, len(aliases)), replace=False)])
    if size == "real":
        return lift(np.asarray(labels), dim, args.seed), lift(queries, dim, args.seed)
    n = int(size)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks, so a 1M x 1024 table is never built twice in memory
        rows = np.asarray(labels[rng.integers(0, len(labels), min(100_000, n - start))])
        rows = unit(rows + args.noise * rng.normal(size=rows.shape).astype(np.float32) / np.sqrt(rows.shape[1]))
        vectors[start:start + len(rows)] = lift(rows, dim, args.seed)
    return vectors, lift(queries, dim, args.seed)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def measure_index(name: str, vectors: np.ndarray, queries: np.ndarray,
                  truth: np.ndarray | None) -> tuple[dict, np.ndarray]:
    """Build one index type over ``vectors``: time, memory, disk, single and batch latency, recall@10
    against ``truth`` (the exact top 10 of each query; None for the exact index itself)."""
    kind, quantize = INDEX_TYPES[name]
    spec = IndexSpec.scaled(len(vectors), vectors.shape[1], kind, quantize)
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    index = build_index(vectors, spec)
    build_s = time.perf_counter() - start
    resident = rss_mb() - before
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "x.index"
        index_vectors = index.vectors
        index.vectors = None  # the index alone; rescoring vectors are counted separately, as disk
        save_index(index, target, {"rows": index.ntotal, "texts": [""] * index.ntotal})
        index_bytes = target.stat().st_size
        index.vectors = index_vectors
    rescore_bytes = vectors.nbytes if spec.rescore else 0
    for query in queries[:10]:  # warm-up
        index.search(query[None], 10)
    single = []
    for query in queries:
        t0 = time.perf_counter()
        index.search(query[None], 10)
        single.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    _, found = index.search(queries, 10)
    batch_qps = len(queries) / (time.perf_counter() - t0)
    recall = 1.0 if truth is None else float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth,
                                                                                               strict=True)]))
    row = {"type": name, "factory": spec.factory(), "params": {k: v for k, v in spec.__dict__.items() if v},
           "build_s": build_s, "resident_mb": resident, "index_mb": index_bytes / 2**20,
           "rescore_vectors_mb_on_disk": rescore_bytes / 2**20, "flat_f32_mb": vectors.nbytes / 2**20,
           "memory_vs_flat": index_bytes / vectors.nbytes, **percentiles(single), "batch_qps": batch_qps,
           "recall_at_10": recall}
    del index
    return row, found


def single_lookup_args(description: str, argv=None):
    """The flags of a benchmark that looks test aliases up one at a time: how many, where results go."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=300, help="test aliases looked up one by one (default: 300)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")
    args = parser.parse_args(argv)
    if args.queries < 1:
        parser.error(f"--queries {args.queries}: time at least one lookup")
    return args


def add_reranker_args(parser, seeds: bool = False) -> None:
    """The flags every reranker benchmark shares: the model, the abstain target, where results go,
    and with ``seeds`` the fold seeds each fit runs with."""
    parser.add_argument("--model", default="teacher", help="teacher, student or a model folder (default: teacher)")
    if seeds:
        parser.add_argument("--seeds", type=int, nargs="+", default=[13, 21, 34, 55],
                            help="fold seeds each fit runs with (default: 13 21 34 55)")
    parser.add_argument("--target-precision", type=float, default=0.95, help="abstain target (default: 0.95)")
    parser.add_argument("--results-dir", type=Path, default=None, help="default: benchmarks/results/")


def reranker_inputs(model: str) -> tuple:
    """What every refit of a model's reranker reads, loaded once: the split, the model's dense
    retriever in float32 and its cross-encoder (None when it has none), as ``calibrate`` reads them."""
    split = load_split()
    dense = load_dense(model, "cpu", int8=False)
    check_split(dense, split.fingerprint)
    cross = None
    if has_cross_encoder(dense.model_dir):
        cross = load_cross_encoder(dense.model_dir, dense.candidates.labels["label"].to_numpy(), "cpu")
    return split, dense, cross


def tables_at(split, dense, cross, k: int = CANDIDATES_PER_CHANNEL) -> tuple:
    """The first stage at ``k`` candidates a channel, and the val and test aliases' candidates and
    features under it (``training_table``)."""
    stage = FirstStage.build(dense.searcher, dense.candidates, dense.calibration["fusion"], k)
    return stage, {part: training_table(stage, split, part, cross) for part in ("val", "test")}


def reranker_tables(model: str, k: int = CANDIDATES_PER_CHANNEL) -> tuple:
    """What a reranker is fitted and scored on, computed once: the split, the model's dense retriever,
    its first stage (``k`` candidates a channel), the val and test aliases' candidates and features
    (``training_table``), and the names of the features' columns.

    As ``calibrate`` fits the saved reranker: the model runs in float32, and the model folder's
    cross-encoder, when it has one, adds its columns; so a refit here with every column and the
    default seed reproduces the saved one.
    """
    split, dense, cross = reranker_inputs(model)
    stage, tables = tables_at(split, dense, cross, k)
    return split, dense, stage, tables, columns_of(cross)
