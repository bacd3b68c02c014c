"""Hard negatives: each alias's most similar non-gold labels, by chunked matrix multiply."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from alias_label.data.split import Split
from alias_label.errors import UserError

CHUNK_BYTES = 256 * 2**20  # bound on one similarity block; 1M aliases x 25k labels would be 100 GB dense


def forbidden_rows(split: Split, aliases: pd.Series, extra_pairs: pd.DataFrame | None = None) -> list[np.ndarray]:
    """Label rows that may never be an alias's negative: any label whose string equals a gold one.

    Strings are compared case-insensitively, and every gold label of an alias counts (one alias
    string can name several entities), including those of ``extra_pairs`` (generated aliases).
    """
    keys = split.labels["label"].str.casefold()
    rows_by_key = pd.Series(np.arange(len(keys))).groupby(keys.to_numpy()).agg(list)
    pairs = pd.concat([split.train, split.val, split.test, extra_pairs])
    gold_keys = pairs.assign(key=pairs["label"].str.casefold()).groupby("alias")["key"].agg(set)
    return [np.array(sorted({row for key in gold_keys[alias] for row in rows_by_key[key]})) for alias in aliases]


def mine_hard_negatives(alias_embs: np.ndarray, label_embs: np.ndarray, forbidden: list[np.ndarray], k: int,
                        device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Top-k non-gold label rows and their cosines for each alias, by chunked matrix multiply."""
    n_labels = label_embs.shape[0]
    most_forbidden = max((len(rows) for rows in forbidden), default=0)
    if n_labels - most_forbidden < k:
        raise UserError(f"--hard-negatives {k} needs at least {k + most_forbidden} labels, but there are "
                        f"{n_labels} (of which up to {most_forbidden} are gold for an alias); lower --hard-negatives")
    # Copies: cached embeddings arrive as read-only memory maps, which torch will not wrap.
    labels = torch.from_numpy(np.array(label_embs, dtype=np.float32)).to(device)
    chunk = max(1, CHUNK_BYTES // (4 * n_labels))
    neg_rows = np.empty((len(alias_embs), k), dtype=np.int64)
    neg_scores = np.empty((len(alias_embs), k), dtype=np.float32)
    for start in range(0, len(alias_embs), chunk):
        block = torch.from_numpy(np.array(alias_embs[start:start + chunk], dtype=np.float32)).to(device) @ labels.T
        for offset, rows in enumerate(forbidden[start:start + chunk]):
            block[offset, torch.as_tensor(rows, dtype=torch.long, device=device)] = -torch.inf
        scores, rows = block.topk(k, dim=1)
        neg_rows[start:start + chunk] = rows.cpu().numpy()
        neg_scores[start:start + chunk] = scores.float().cpu().numpy()
    return neg_rows, neg_scores
