"""Embedding caches: the teacher's vectors of every label and alias, which distillation reuses."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alias_label.data.split import Split
from alias_label.index.dense import _drop_sidecar, sidecar_path
from alias_label.io import atomic_path, read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.paths import paths


def save_embeddings(target: Path, embeddings: np.ndarray, meta: dict) -> None:
    _drop_sidecar(target)
    with atomic_path(target) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, embeddings)
    write_json(sidecar_path(target), {"rows": int(embeddings.shape[0]), "dim": int(embeddings.shape[1]),
                                      "dtype": str(embeddings.dtype), **meta})


def load_embeddings(path: Path, expected: dict) -> tuple[np.ndarray | None, str]:
    """Cached embeddings if their sidecar matches ``expected``; else None and the reason."""
    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.exists() or not meta_path.exists():
        return None, f"no cache at {path}"
    meta = read_json(meta_path)
    for key, value in expected.items():
        if meta.get(key) != value:
            return None, f"stale cache {path.name}: {key} is {meta.get(key)!r}, expected {value!r}"
    embeddings = np.load(path, mmap_mode="r")
    if embeddings.shape[0] != meta["rows"]:
        return None, f"corrupt cache {path.name}: {embeddings.shape[0]} rows, sidecar says {meta['rows']}"
    return np.asarray(embeddings), "cache hit"


def cache_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """The teacher's embedding cache, which distillation reads."""
    cache_dir = Path(cache_dir or paths().cache)
    return {"labels": cache_dir / "teacher_label_embs.npy", "aliases": cache_dir / "teacher_alias_embs.npy",
            "label_keys": cache_dir / "teacher_label_key_embs.npy"}


def cache_meta(model_dir: Path, split: Split, kind: str) -> dict:
    """What a cached embedding matrix depends on; any change makes the cache stale."""
    return {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
            "kind": kind, "normalized": True, "dtype": "float32"}


def write_cache(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path,
                cache_dir: Path | None = None) -> None:
    for kind, target in cache_paths(cache_dir).items():
        save_embeddings(target, embeddings[kind], cache_meta(model_dir, split, kind))
