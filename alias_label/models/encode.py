"""The one encode function: unit-normalised float32 embeddings, on CPU or GPU."""

from __future__ import annotations

import numpy as np
import torch

from alias_label.models.load import inference_precision, prompt_for
from alias_label.models.traced import sentence_embeddings

# Texts per forward pass, by device. A CPU encodes short names faster in small batches, whose
# activations stay in its caches (docs/speed.md); a GPU wants large ones.
CPU_BATCH = 32
DEVICE_BATCH = 128
PROGRESS_MIN_TEXTS = 640  # shorter lists take seconds; a bar would only clutter the log


def default_batch_size(device) -> int:
    return CPU_BATCH if str(device) == "cpu" else DEVICE_BATCH


def encode(model, texts, kind: str = "query", batch_size: int | None = None, progress: bool | None = None,
           ) -> np.ndarray:
    """Unit-normalised float32 embeddings, batched, with a progress bar on long lists.

    Normalised vectors make inner product equal cosine, which is what IndexFlatIP ranks by. Long
    lists on a GPU take the high-throughput path (alias_label/models/fast_encode.py).
    ``batch_size``: texts per forward pass (default: ``default_batch_size`` of the model's device).
    """
    texts = list(texts)
    batch_size = batch_size or default_batch_size(model.device)
    if str(model.device).startswith("cuda") and len(texts) > 4 * batch_size:
        from alias_label.models.fast_encode import fast_encode

        return fast_encode(model, texts, kind)
    if progress is None:
        progress = len(texts) > PROGRESS_MIN_TEXTS
    with inference_precision(str(model.device)):
        if 0 < len(texts) <= batch_size:
            return _encode_one_batch(model, texts, kind)
        embeddings = model.encode(texts, prompt=prompt_for(model, kind) or None, batch_size=batch_size,
                                  normalize_embeddings=True, show_progress_bar=progress, convert_to_numpy=True)
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def encode_alone(model, texts, kind: str = "query") -> np.ndarray:
    """Each text's embedding as it would be encoded alone: on a CPU, one forward pass per text.

    A batch pads its texts to its longest, and the padding changes the sums in the last bits; in
    int8 a batch's activations also share one quantisation scale, so batch-mates move each
    other's embedding further. A reranker's trees turn such differences into another top answer
    or confidence now and then, so a name looked up in a table would get another answer than the
    same name looked up alone. Lookups and the fits that must see what lookups see encode queries
    here. A GPU keeps its batches: one forward pass per text would waste it.
    """
    texts = list(texts)
    if str(model.device) != "cpu" or not texts:
        return encode(model, texts, kind)
    with inference_precision(str(model.device)):
        return np.vstack([_encode_one_batch(model, [text], kind) for text in texts])


def _encode_one_batch(model, texts: list[str], kind: str) -> np.ndarray:
    """The texts as one batch, through the model's own preprocessing and forward pass.

    The same computation as sentence-transformers' ``encode`` for a single batch, without the
    bookkeeping it repeats on every call (``eval()`` over every module, the device looked up
    from the parameters, length sorting), which is a large share of a short query's encode on a
    CPU (docs/speed.md); a model traced for lookups (``alias_label.models.traced``) runs its trace.
    """
    from sentence_transformers.util import batch_to_device

    if model.training:
        model.eval()  # as encode() leaves it: dropout off
    prompt = prompt_for(model, kind) or None
    features = batch_to_device(model.preprocess(texts, prompt=prompt), model.device)
    with torch.inference_mode():
        embeddings = sentence_embeddings(model, features, prompt)
    return np.ascontiguousarray(torch.nn.functional.normalize(embeddings.float(), dim=-1).cpu().numpy())


STREAM_CHUNK_ROWS = 32_768  # rows encoded per chunk when streaming: memory stays flat at any table size


def encode_stream(model, texts, kind: str = "query", chunk_rows: int = STREAM_CHUNK_ROWS,
                  batch_size: int | None = None):
    """(start row, embeddings) chunk by chunk, in input order; only one chunk is ever in memory."""
    for start in range(0, len(texts), chunk_rows):
        yield start, encode(model, texts[start:start + chunk_rows], kind=kind, batch_size=batch_size,
                            progress=False)
