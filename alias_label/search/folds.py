"""What the second stage's out-of-fold fits share: entity folds, and a query's scores as shares."""

from __future__ import annotations

import numpy as np


def entity_folds(entities: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A fold number for each alias, whole entities to one fold, so no fold sees another's entity."""
    distinct = np.random.default_rng(seed).permutation(np.unique(entities))
    fold_of = {entity: i % folds for i, entity in enumerate(distinct)}
    return np.array([fold_of[entity] for entity in entities])


def shares(raw: np.ndarray, temperature: float) -> np.ndarray:
    """A query's candidate scores as shares that sum to 1: a softmax at ``temperature``.

    LambdaRank scores only order one query's candidates; their shares say how far the top one
    stands out.
    """
    weights = np.exp((raw - raw.max()) / temperature)
    return weights / weights.sum()
