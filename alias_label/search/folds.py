"""What the second stage's out-of-fold fits share: entity folds, and a query's scores as shares."""

from __future__ import annotations

from collections import Counter

import numpy as np

from alias_label.errors import UserError

# A fold learns from the other folds' aliases; LightGBM's row sampling draws none from a single one.
MIN_FOLD_ALIASES = 2


def check_folds(entities: np.ndarray) -> None:
    """Refuse validation aliases too few to fit in entity folds: each fold learns from the aliases
    of the entities it holds out none of, so there must be two entities, and besides the entity with
    the most aliases at least ``MIN_FOLD_ALIASES`` more."""
    counts = Counter(entities.tolist())
    if len(counts) < 2 or len(entities) - max(counts.values()) < MIN_FOLD_ALIASES:
        raise UserError(
            f"the validation split holds {len(entities)} alias(es) of {len(counts)} entity(ies), too few for the "
            "reranker: it is fitted in entity folds, each on the other entities' aliases, and needs two entities "
            f"and at least {MIN_FOLD_ALIASES} aliases besides those of the entity with the most. Give validation "
            "more entities with --val-frac (e.g. 0.3, on prepare_data.py and train_alias_label.py alike), or "
            "add aliases to your data")


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
