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
                   batch_size: int = 128) -> np.ndarray:
    """Encode into a memory-mapped .npy at ``target``, adding each chunk to ``index`` as it arrives.

    Whole-table Python lists and copies never exist, so peak memory is one chunk plus the index.
    An index that must be trained first (IVF, PQ, int8) is trained once enough rows are on disk.
    The file appears at ``target`` only when complete; the return value maps it read-only.
    """
    texts = list(texts)
    train_after = training_rows(len(texts), index.spec) if index is not None else 0
    dim = embedding_dim(model) or encode(model, texts[:1], kind=kind).shape[1]
    with atomic_path(target) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(texts), dim))
        added = 0
        for start, chunk in tqdm(encode_stream(model, texts, kind, chunk_rows, batch_size), unit="chunk",
                                 total=-(-len(texts) // chunk_rows), desc=f"encode {Path(target).name}",
                                 disable=len(texts) <= chunk_rows):
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
