"""FAISS indexes and embedding caches, each with a JSON sidecar that describes it.

Vectors are unit-normalised, so the inner product an ``IndexFlatIP`` ranks by is the
cosine similarity; exact flat search is the reference every other index is judged by.
Readers check the sidecar (data fingerprint, model, row count) and fail with the command
that rebuilds the artifact, rather than silently answering from a stale index.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from alias_label.common import UserError, atomic_path, read_json, write_json

log = logging.getLogger(__name__)


def sidecar_path(artifact: Path) -> Path:
    return Path(f"{artifact}.json")


def build_index(embeddings: np.ndarray):
    import faiss

    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(np.ascontiguousarray(embeddings, dtype=np.float32))
    return index


def save_index(index, target: Path, meta: dict) -> None:
    """Write the index, then its sidecar; the sidecar's presence marks a complete pair."""
    import faiss

    if meta.get("rows") != index.ntotal or len(meta.get("texts", [])) != index.ntotal:
        raise ValueError(f"sidecar describes {meta.get('rows')} rows, index holds {index.ntotal}")
    _drop_sidecar(target)
    with atomic_path(target) as tmp:
        faiss.write_index(index, str(tmp))
    write_json(sidecar_path(target), {"index_type": "flat", "metric": "inner_product", "normalized": True,
                                      "dim": index.d, **meta})
    log.info("wrote %s (%d x %d)", target, index.ntotal, index.d)


def load_index(path: Path, fix_command: str, data_fingerprint: str | None = None):
    """Load an index and its sidecar, checking they match each other and the expected split."""
    import faiss

    path = Path(path)
    meta_path = sidecar_path(path)
    if not path.exists() or not meta_path.exists():
        raise UserError(f"index not found: {path}{'' if meta_path.exists() else ' (or its sidecar)'}. "
                        f"Build it with: {fix_command}")
    meta = read_json(meta_path)
    if data_fingerprint is not None and meta.get("data_fingerprint") != data_fingerprint:
        raise UserError(f"{path} was built for data split {meta.get('data_fingerprint')}, but the current split "
                        f"is {data_fingerprint}. Rebuild it with: {fix_command}")
    index = faiss.read_index(str(path))
    if index.ntotal != meta["rows"]:
        raise UserError(f"{path} holds {index.ntotal} rows but its sidecar says {meta['rows']}; "
                        f"the pair is inconsistent. Rebuild it with: {fix_command}")
    return index, meta


def search(index, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, row ids) for each query row; k is capped at the index size."""
    k = min(k, index.ntotal)
    return index.search(np.ascontiguousarray(query_embeddings, dtype=np.float32), k)


def _drop_sidecar(target: Path) -> None:
    """Remove the old sidecar first: a crash before the new one is written then reads as 'missing',
    never as an old description of new content."""
    sidecar_path(target).unlink(missing_ok=True)


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
