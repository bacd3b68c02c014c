"""The one way to encode the candidate tables, index them and search them.

The teacher and student scripts, the evaluator, the lookup script and the notebooks all
call these functions, so a label is encoded, indexed and ranked the same way everywhere.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from alias_label.common import paths
from alias_label.data import Split
from alias_label.index import build_index, load_index, save_embeddings, save_index, search
from alias_label.metrics import DEPTH, retrieval_metrics
from alias_label.modeling import encode, model_fingerprint

log = logging.getLogger(__name__)

# Which script rebuilds the indexes of each model; error messages name it.
FIX_COMMANDS = {"teacher": "python scripts/train_alias_label.py", "student": "python scripts/distill_model.py"}
INDEX_SUFFIX = {"teacher": "", "student": "_distilled"}


def index_paths(model_name: str, index_dir: Path | None = None) -> dict[str, Path]:
    index_dir = Path(index_dir or paths().faiss)
    suffix = INDEX_SUFFIX[model_name]
    return {"labels": index_dir / f"labels{suffix}.index", "aliases": index_dir / f"aliases{suffix}.index"}


def cache_paths(cache_dir: Path | None = None, prefix: str = "teacher") -> dict[str, Path]:
    cache_dir = Path(cache_dir or paths().cache)
    return {"labels": cache_dir / f"{prefix}_label_embs.npy", "aliases": cache_dir / f"{prefix}_alias_embs.npy"}


def cache_meta(model_dir: Path, split: Split, kind: str) -> dict:
    """What a cached embedding matrix depends on; any change makes the cache stale."""
    return {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
            "kind": kind, "normalized": True, "dtype": "float32"}


def encode_candidates(model, split: Split) -> dict[str, np.ndarray]:
    """Labels are encoded as documents and aliases as queries, in both directions of search."""
    log.info("encoding %d labels and %d aliases", len(split.labels), len(split.aliases))
    return {"labels": encode(model, split.labels["label"], kind="document"),
            "aliases": encode(model, split.aliases["alias"], kind="query")}


def write_indexes(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path, model_name: str,
                  index_dir: Path | None = None) -> dict[str, Path]:
    """Write labels(.|_distilled).index and aliases(...).index with self-describing sidecars."""
    targets = index_paths(model_name, index_dir)
    tables = {"labels": split.labels.rename(columns={"label": "text"}),
              "aliases": split.aliases.rename(columns={"alias": "text"})}
    for kind, target in targets.items():
        meta = {"kind": kind, "model": str(model_dir), "model_role": model_name,
                "model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
                "rows": len(tables[kind]), "texts": tables[kind]["text"].tolist(),
                "qids": tables[kind]["qids"].map(list).tolist()}
        save_index(build_index(embeddings[kind]), target, meta)
    return targets


def write_cache(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path,
                cache_dir: Path | None = None, prefix: str = "teacher") -> None:
    for kind, target in cache_paths(cache_dir, prefix).items():
        save_embeddings(target, embeddings[kind], cache_meta(model_dir, split, kind))


def load_indexes(model_name: str, split: Split, index_dir: Path | None = None) -> dict:
    """Both indexes of one model, checked against the current split."""
    loaded = {}
    for kind, path in index_paths(model_name, index_dir).items():
        loaded[kind] = load_index(path, FIX_COMMANDS[model_name], split.fingerprint)
    return loaded


def rank_labels(model, label_index, aliases, depth: int = DEPTH) -> tuple[np.ndarray, np.ndarray]:
    """Scores and label row ids of the top ``depth`` labels for each alias."""
    return search(label_index, encode(model, aliases, kind="query"), depth)


def evaluate_split(model, split: Split, split_name: str, label_index, depth: int = DEPTH) -> dict:
    """Full N-way alias->label retrieval over every distinct label, for one split's aliases."""
    pairs = split.pairs(split_name)
    _, ranked = rank_labels(model, label_index, pairs["alias"], depth)
    return retrieval_metrics(ranked, split.label_rows(pairs["label"]))
