"""Encoding a table of any size straight into a memory-mapped file and an index, chunk by chunk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from alias_label.index.dense import training_rows, training_sample
from alias_label.io import atomic_path
from alias_label.models.encode import STREAM_CHUNK_ROWS, encode, encode_stream
from alias_label.models.load import embedding_dim


def encode_to_file(model, texts, kind: str, target: Path, index=None, chunk_rows: int = STREAM_CHUNK_ROWS,
                   batch_size: int | None = None) -> np.ndarray:
    """Encode into a memory-mapped .npy at ``target``, adding each chunk to ``index`` as it arrives.

    Whole-table Python lists and copies never exist, so peak memory is one chunk plus the index.
    The file appears at ``target`` only when complete; the return value maps it read-only.
    """
    texts = list(texts)
    dim = embedding_dim(model) or encode(model, texts[:1], kind=kind).shape[1]
    chunks = tqdm(encode_stream(model, texts, kind, chunk_rows, batch_size), unit="chunk",
                  total=-(-len(texts) // chunk_rows), desc=f"encode {Path(target).name}",
                  disable=len(texts) <= chunk_rows)
    return write_chunks(chunks, len(texts), dim, target, index, chunk_rows)


def write_chunks(chunks, n_rows: int, dim: int, target: Path, index=None,
                 chunk_rows: int = STREAM_CHUNK_ROWS) -> np.ndarray:
    """Write (start row, vectors) chunks, in order, into a memory-mapped .npy, adding each to ``index``.

    An index that must be trained first (IVF, PQ, int8) is trained once enough rows are on disk.
    """
    train_after = training_rows(n_rows, index.spec) if index is not None else 0
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_rows, dim))
        added = 0
        for start, chunk in chunks:
            out[start:start + len(chunk)] = chunk
            done = start + len(chunk)
            if index is None:
                continue
            if index.needs_training and done >= train_after:
                index.train(training_sample(out[:done], index.spec))
            if not index.needs_training:
                for offset in range(added, done, chunk_rows):
                    index.add(out[offset:min(done, offset + chunk_rows)])
                added = done
        out.flush()
        del out
    return np.load(target, mmap_mode="r")


def shard_path(target: Path, rank: int, world: int) -> Path:
    target = Path(target)
    return target.with_name(f".{target.name}.shard-{rank:05d}-of-{world:05d}.npy")


def encode_across_processes(model, texts, kind: str, target: Path, processes, index=None, shards: str = "files",
                            chunk_rows: int = STREAM_CHUNK_ROWS, batch_size: int | None = None) -> np.ndarray | None:
    """``encode_to_file`` spread over the processes of ``accelerate launch``: each encodes its whole
    chunks, and the main process writes them, in order, into ``target`` and ``index``.

    ``shards="files"``: each process streams its part into a memory-mapped file beside ``target``
    (on several nodes, a folder they share), so no process holds more than a chunk. ``"memory"``:
    the parts travel to the main process through the process group, for nodes with no shared disk.
    Returns the vectors on the main process, None on the others.
    """
    texts = list(texts)
    if processes.world == 1:
        return encode_to_file(model, texts, kind, target, index, chunk_rows, batch_size)
    dim = embedding_dim(model) or encode(model, texts[:1], kind=kind).shape[1]
    start, end = processes.rows(len(texts), chunk_rows)
    owned = [processes.rows(len(texts), chunk_rows, rank) for rank in range(processes.world)]
    if shards == "memory":
        mine = [rows for _, rows in encode_stream(model, texts[start:end], kind, chunk_rows, batch_size)]
        parts = processes.gather(np.vstack(mine) if mine else np.empty((0, dim), np.float32))
        if not processes.is_main:
            return None
        chunks = ((first + offset, part[offset:offset + chunk_rows])
                  for (first, _), part in zip(owned, parts, strict=True) for offset in range(0, len(part), chunk_rows))
        return write_chunks(chunks, len(texts), dim, target, index, chunk_rows)
    if end > start:
        encode_to_file(model, texts[start:end], kind, shard_path(target, processes.rank, processes.world),
                       None, chunk_rows, batch_size)
    processes.barrier()
    if not processes.is_main:
        return None
    files = [(first, last, shard_path(target, rank, processes.world))
             for rank, (first, last) in enumerate(owned) if last > first]
    chunks = ((first + offset, np.load(path, mmap_mode="r")[offset:offset + chunk_rows])
              for first, last, path in files for offset in range(0, last - first, chunk_rows))
    vectors = write_chunks(chunks, len(texts), dim, target, index, chunk_rows)
    for _, _, path in files:
        path.unlink()
    return vectors
