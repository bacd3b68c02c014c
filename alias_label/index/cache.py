"""Embedding caches: a model's vectors of every label and alias, encoded once.

The teacher's are written when it is indexed and reused by distillation; the untrained base
model's are written the first time the evaluator scores it, and reused by every later evaluation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from alias_label.data.split import Split
from alias_label.index.dense import _drop_sidecar, sidecar_path
from alias_label.index.tables import encode_candidates
from alias_label.io import atomic_path, read_json, write_json
from alias_label.models.load import model_fingerprint
from alias_label.paths import paths

log = logging.getLogger(__name__)


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


def cache_paths(cache_dir: Path | None = None, owner: str = "teacher") -> dict[str, Path]:
    """The embedding cache of one model (``owner``: the teacher, which distillation reads, or the base)."""
    cache_dir = Path(cache_dir or paths().cache)
    return {"labels": cache_dir / f"{owner}_label_embs.npy", "aliases": cache_dir / f"{owner}_alias_embs.npy",
            "label_keys": cache_dir / f"{owner}_label_key_embs.npy"}


def cache_meta(model_dir: Path | str, split: Split, kind: str, settings: dict | None = None) -> dict:
    """What a cached embedding matrix depends on; any change makes the cache stale.

    ``settings``: how the model was loaded when that is not in its files (prompts, sequence length).
    """
    return {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
            "kind": kind, "normalized": True, "dtype": "float32", **(settings or {})}


def write_cache(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path | str,
                cache_dir: Path | None = None, owner: str = "teacher", settings: dict | None = None) -> None:
    for kind, target in cache_paths(cache_dir, owner).items():
        save_embeddings(target, embeddings[kind], cache_meta(model_dir, split, kind, settings))


def cached_candidates(model, model_dir: Path | str, split: Split, owner: str, cache_dir: Path | None = None,
                      settings: dict | None = None, refresh: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """``model``'s embeddings of every label, label key and alias: from ``owner``'s cache when each
    file's sidecar matches this model, data and ``settings``, else encoded and cached; "hit" or "miss"."""
    targets = cache_paths(cache_dir, owner)
    cached, reason = {}, "refresh asked for"
    for kind, path in targets.items():
        if refresh:
            break
        embeddings, reason = load_embeddings(path, cache_meta(model_dir, split, kind, settings))
        if embeddings is None:
            break
        cached[kind] = embeddings
    if len(cached) == len(targets):
        log.info("%s cache hit: %s", owner, ", ".join(str(p) for p in targets.values()))
        return cached, "hit"
    log.info("%s cache miss (%s); encoding with the %s model", owner, reason, owner)
    embeddings = encode_candidates(model, split)
    write_cache(embeddings, split, model_dir, cache_dir, owner, settings)
    return embeddings, "miss"
