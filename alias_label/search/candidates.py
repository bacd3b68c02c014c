"""The first stage of two-stage retrieval: the union of every channel's top candidates.

Each channel (dense, TF-IDF, acronym, ...) ranks label rows on its own. The union keeps every
label any channel put in its top K, with each channel's score and rank for it, which is what a
reranker scores. A label a channel did not propose gets that channel's rank 0 and score NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class CandidateSet:
    """Per query, the label rows of the union (-1 padded) and each channel's score and rank of each."""

    rows: np.ndarray  # (queries, width) int64, -1 past the query's candidates
    scores: dict[str, np.ndarray]  # channel -> (queries, width) float32, NaN where it did not propose the row
    ranks: dict[str, np.ndarray]  # channel -> (queries, width) int32, 1-based, 0 where it did not propose it

    def __len__(self) -> int:
        return len(self.rows)

    def sizes(self) -> np.ndarray:
        return (self.rows >= 0).sum(axis=1)

    def recall(self, gold_rows: np.ndarray) -> float:
        """Share of queries whose gold label row is among their candidates: the second stage's ceiling."""
        return float(np.mean((self.rows == np.asarray(gold_rows)[:, None]).any(axis=1)))


def channel_results(channels: dict, queries, k: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each channel's top-k (scores, label rows) for the queries; a channel is anything with ``labels_for``."""
    queries = list(queries)
    return {name: channel.labels_for(queries, k) for name, channel in channels.items()}


def union(results: dict[str, tuple[np.ndarray, np.ndarray]]) -> CandidateSet:
    """The union of the channels' ranked lists, in order of first appearance (channel order, then rank)."""
    n = len(next(iter(results.values()))[1])
    per_query = []
    for i in range(n):
        ids = np.concatenate([channel_ids[i] for _, channel_ids in results.values()])
        proposed = np.flatnonzero(ids >= 0)
        _, first = np.unique(ids[proposed], return_index=True)
        per_query.append(ids[proposed[np.sort(first)]])
    width = max((len(rows) for rows in per_query), default=0)
    rows = np.full((n, width), -1, dtype=np.int64)
    scores = {name: np.full((n, width), np.nan, dtype=np.float32) for name in results}
    ranks = {name: np.zeros((n, width), dtype=np.int32) for name in results}
    for i, found in enumerate(per_query):
        rows[i, :len(found)] = found
        by_row = np.argsort(found)
        for name, (channel_scores, ids) in results.items():
            ranked = np.flatnonzero(ids[i] >= 0)
            position = by_row[np.searchsorted(found[by_row], ids[i, ranked])]
            scores[name][i, position] = channel_scores[i, ranked]
            ranks[name][i, position] = ranked + 1
    return CandidateSet(rows, scores, ranks)


def candidates(channels: dict, queries, k: int) -> CandidateSet:
    """For a batch of aliases, the union of every channel's top k, with each channel's scores and ranks."""
    return union(channel_results(channels, queries, k))
