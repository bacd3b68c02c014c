"""Training the cross-encoder the reranker reads: each train alias against its gold label and the
wrong candidates the model's own first stage ranks highest.

The negatives are the labels the reranker must tell apart from the right one at lookup time, so
the cross-encoder learns exactly that distinction (binary cross-entropy on sentence-transformers'
``CrossEncoder``). Train aliases are the teacher's own, which is why the reranker that reads the
cross-encoder's scores is still fitted on validation aliases only.
"""

from __future__ import annotations

import tempfile

import numpy as np
import pandas as pd

from alias_label.data.split import Split
from alias_label.search.features import COLUMN
from alias_label.train.distill import reduce_layers
from alias_label.train.trainer import batch_sampler


def train_sample(split: Split, size: int, seed: int) -> pd.DataFrame:
    """A seeded sample of ``size`` train pairs (all of them for 0), in split order."""
    train = split.pairs("train")
    if size and size < len(train):
        chosen = np.sort(np.random.default_rng(seed).choice(len(train), size, replace=False))
        train = train.iloc[chosen]
    return train


def mined_pairs(table, aliases: list[str], gold: list[str], labels: np.ndarray, negatives: int) -> dict:
    """Each alias with its gold label (1.0) and its ``negatives`` wrong candidates of highest fused score (0.0).

    ``table`` is ``pairs_table``'s (candidate rows, feature matrices, relevance, entities) of these aliases.
    """
    rows, matrices, relevance, _ = table
    pairs = {"query": [], "passage": [], "label": []}
    for alias, label, candidate_rows, matrix, rel in zip(aliases, gold, rows, matrices, relevance, strict=True):
        wrong = np.flatnonzero(rel == 0)
        hardest = wrong[np.argsort(-matrix[wrong, COLUMN["fused"]], kind="stable")[:negatives]]
        for text, target in [(label, 1.0), *((labels[candidate_rows[i]], 0.0) for i in hardest)]:
            pairs["query"].append(alias)
            pairs["passage"].append(text)
            pairs["label"].append(target)
    return pairs


def train_cross_encoder(pairs: dict, base: str, device: str, epochs: float = 1, batch_size: int = 32,
                        lr: float = 3e-5, max_length: int = 48, seed: int = 13, layers: int | None = None,
                        length_buckets: bool = True):
    """A ``CrossEncoder`` with one output, trained from ``base`` on the (query, passage, label) pairs;
    with ``layers``, from that many of the base's transformer layers, evenly spaced.
    ``length_buckets`` False trains on the library's random batches instead (for comparison)."""
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers import set_seed

    # The scoring head is initialised when the model is built, before the trainer seeds anything:
    # seeded here, the same pairs and seed give the same cross-encoder.
    set_seed(seed)
    cross = CrossEncoder(base, num_labels=1, device=device, max_length=max_length)
    if layers is not None and layers < cross[0].auto_model.config.num_hidden_layers:
        reduce_layers(cross, layers)
    dataset = Dataset.from_dict(pairs)
    # Nothing is saved along the way: a run takes minutes on a CPU, and the model is saved whole at the end.
    # Batches are cut from windows sorted by length, as the bi-encoders' are: a pair pads to the
    # longest pair in its batch, and the pointwise loss never compares the pairs of a batch.
    with tempfile.TemporaryDirectory() as output:
        training_args = CrossEncoderTrainingArguments(
            output_dir=output, num_train_epochs=epochs, per_device_train_batch_size=batch_size, learning_rate=lr,
            warmup_steps=0.1, seed=seed, use_cpu=not str(device).startswith("cuda"), save_strategy="no",
            eval_strategy="no", report_to="none", logging_steps=200,
            batch_sampler=batch_sampler(dataset, unique=False, model=cross) if length_buckets else "batch_sampler")
        trainer = CrossEncoderTrainer(model=cross, args=training_args, train_dataset=dataset,
                                      loss=BinaryCrossEntropyLoss(cross))
        trainer.train()
    return cross
