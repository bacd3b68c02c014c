"""High-throughput encoding of many short texts: the GPU path, with the same logic on CPU.

Plain ``SentenceTransformer.encode`` spends most of a GPU's time waiting: it tokenises each batch
in the main thread, pads it to its longest text, runs fp32 (or autocast) kernels and copies
every batch's output back to the host. Here instead:

- the weights are cast once to bf16 (fp16 where bf16 is missing), so no per-op casting;
- texts are sorted by their exact token count and cut into batches by a token budget, so padding
  is near zero and each forward pass is as large as memory allows (characters are a poor proxy:
  they order Latin, Cyrillic and CJK names differently from their tokens; docs/speed.md);
- tokenisation runs in DataLoader worker processes, ahead of the GPU, one chunk of texts per
  worker (count tokens, sort, cut, pad each batch), into pinned memory, copied with
  ``non_blocking``;
- embeddings are normalised and written into one preallocated device tensor, and cross to the
  host once at the end, or never when the caller asks for a tensor.
"""

from __future__ import annotations

import copy
import os
import weakref

import numpy as np
import torch

from alias_label.models.load import autocast_dtype, embedding_dim, prompt_for

MAX_TOKENS = 65_536  # tokens per forward pass; an H100 keeps e5-large busy at this size
MAX_BATCH = 4_096
CHUNK = 16_384  # texts per worker item: enough to sort and fill batches, small enough to start the GPU soon
_HALF_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def inference_dtype(device: str) -> torch.dtype:
    """bf16/fp16 weights on CUDA, fp32 on CPU (where half precision is slower, not faster)."""
    return autocast_dtype(device) or torch.float32


def token_counts(tokenizer, texts: list[str], max_length: int | None) -> np.ndarray:
    """Tokens per text, special tokens included, capped at ``max_length`` as the model truncates."""
    ids = tokenizer(texts, add_special_tokens=True, truncation=max_length is not None, max_length=max_length,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(texts))


def token_budget_batches(lengths: np.ndarray, max_tokens: int = MAX_TOKENS, max_batch: int = MAX_BATCH,
                         ) -> list[np.ndarray]:
    """Row indices, longest first, cut so each batch's padded size (rows x longest) fits the budget.

    Longest first: an out-of-memory error, if any, comes in the first batch, not after an hour.
    """
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, min(max_batch, max_tokens // longest, len(order) - start))
        batches.append(order[start:start + size])
        start += size
    return batches


class TokenisedChunks(torch.utils.data.Dataset):
    """One item per chunk of ``chunk`` texts, built in a worker: the chunk's token-budget batches,
    each a pair (row indices into ``texts``, model inputs padded to that batch's longest text)."""

    def __init__(self, model, texts: list[str], prompt: str | None, chunk: int = CHUNK,
                 max_tokens: int = MAX_TOKENS, max_batch: int = MAX_BATCH):
        self.model, self.texts, self.prompt, self.chunk = model, texts, prompt, chunk
        self.max_tokens, self.max_batch = max_tokens, max_batch

    def __len__(self) -> int:
        return -(-len(self.texts) // self.chunk)

    def __getitem__(self, i):
        start = i * self.chunk
        texts = self.texts[start:start + self.chunk]
        counted = [self.prompt + text for text in texts] if self.prompt else texts
        lengths = token_counts(self.model.tokenizer, counted, self.model.max_seq_length)
        return [(torch.from_numpy(rows + start), self.model.preprocess([texts[r] for r in rows], prompt=self.prompt))
                for rows in token_budget_batches(lengths, self.max_tokens, self.max_batch)]


def half_precision_copy(model, dtype: torch.dtype):
    """The model with its weights in ``dtype``, made once per model; the caller's model is untouched."""
    if dtype == torch.float32:
        return model
    cached = _HALF_COPIES.get(model)
    if cached is None or cached[0] != dtype:
        cached = (dtype, copy.deepcopy(model).to(dtype))
        _HALF_COPIES[model] = cached
    return cached[1]


def _serial_tokenizer(_worker_id: int) -> None:
    # Each worker is one tokenising thread. Left parallel, every forked worker's tokenizer would
    # start a thread per core, and the main process, which launches the GPU's work, would starve.
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def default_workers(device: str) -> int:
    # Each worker tokenises its chunk twice (count, then pad); the main process and its pinning
    # thread keep two cores.
    return max(1, min(16, (os.cpu_count() or 1) - 2)) if str(device).startswith("cuda") else 0


def fast_encode(model, texts, kind: str = "query", max_tokens: int = MAX_TOKENS, max_batch: int = MAX_BATCH,
                workers: int | None = None, as_tensor: bool = False, chunk: int = CHUNK):
    """Unit-normalised embeddings of ``texts`` in input order: float32 numpy, or a device tensor."""
    texts = list(texts)
    device = str(model.device)
    runner = half_precision_copy(model, inference_dtype(device)).eval()
    workers = default_workers(device) if workers is None else workers
    chunks = TokenisedChunks(model, texts, prompt_for(model, kind) or None, chunk, max_tokens, max_batch)
    loader = torch.utils.data.DataLoader(chunks, batch_size=None, num_workers=workers, worker_init_fn=_serial_tokenizer,
                                         pin_memory=device.startswith("cuda"), prefetch_factor=2 if workers else None)
    out = torch.empty((len(texts), embedding_dim(model)), dtype=torch.float32, device=device)
    with torch.inference_mode():
        for batches in loader:
            for rows, features in batches:
                features = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                            for k, v in features.items()}
                embeddings = runner(features)["sentence_embedding"].float()
                out[rows.to(device, non_blocking=True)] = torch.nn.functional.normalize(embeddings, dim=1)
    return out if as_tensor else out.cpu().numpy()
