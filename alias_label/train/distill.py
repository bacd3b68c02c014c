"""Distillation: the teacher's cached embeddings, the design's cosine pairs, and the layer-reduced student.

The teacher's embeddings of every alias and label are computed once and cached. The default
objective has the student match those embeddings; the design's recipe, the teacher's cosine on
gold and teacher-mined hard-negative pairs, is ``distillation_pairs`` (docs/student.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from alias_label.data.split import Split
from alias_label.errors import UserError
from alias_label.index.cache import cache_meta, cached_candidates, load_embeddings, save_embeddings
from alias_label.index.tables import label_keys
from alias_label.io import sha256_of
from alias_label.models.encode import encode
from alias_label.models.load import embedding_dim
from alias_label.paths import paths
from alias_label.train.augment import augmentation_candidates
from alias_label.train.mining import forbidden_rows, mine_hard_negatives

log = logging.getLogger(__name__)


def teacher_embeddings(teacher, teacher_dir: Path, split: Split, cache_dir: Path | None = None,
                       refresh: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """The teacher's label and alias embeddings from the cache, recomputed only when stale."""
    return cached_candidates(teacher, teacher_dir, split, "teacher", cache_dir, refresh=refresh)


GENERATED_CACHE = "teacher_generated_alias_embs.npy"


def generated_embeddings(teacher, teacher_dir: Path, split: Split, texts: list[str], cache_dir: Path | None = None,
                         refresh: bool = False) -> tuple[np.ndarray, str]:
    """The teacher's query embeddings of generated aliases, cached beside its other embeddings.

    The sidecar holds a fingerprint of the texts themselves, so other augmentation kinds, or a
    change in how aliases are generated, make the cache stale rather than wrong.
    """
    target = Path(cache_dir or paths().cache) / GENERATED_CACHE
    expected = {**cache_meta(teacher_dir, split, "generated_aliases"), "texts_fingerprint": sha256_of(*texts)}
    embeddings, reason = (None, "--refresh-cache") if refresh else load_embeddings(target, expected)
    if embeddings is not None:
        log.info("teacher cache hit: %s (%d generated aliases)", target, len(texts))
        return embeddings, "hit"
    log.info("teacher cache miss (%s); encoding %d generated aliases with the teacher", reason, len(texts))
    embeddings = encode(teacher, texts, kind="query")
    save_embeddings(target, embeddings, expected)
    return embeddings, "miss"


def generated_texts(split: Split, kinds: list[str]) -> list[str]:
    """The distinct aliases ``kinds`` of augmentation generate from train-side labels."""
    return augmentation_candidates(split, kinds)["alias"].drop_duplicates().tolist()


def imitated_texts(split: Split, generated: list[str]) -> tuple[np.ndarray, dict[str, list[str]]]:
    """What the embedding-MSE student imitates: the rows of ``split.aliases`` that are train
    aliases, and its two datasets' texts, the queries (those aliases, then ``generated``) and the
    documents (every label, then every label key), in the order of the teacher's vectors."""
    alias_rows = np.flatnonzero(split.aliases["alias"].isin(set(split.train["alias"])))
    return alias_rows, {"queries": split.aliases["alias"].iloc[alias_rows].tolist() + list(generated),
                        "documents": split.labels["label"].tolist() + label_keys(split)["text"].tolist()}


def distillation_pairs(split: Split, embeddings: dict[str, np.ndarray], k: int, device: str = "cpu") -> pd.DataFrame:
    """(alias, label, teacher cosine) for each train alias's gold label and its k hard negatives."""
    train = split.train.drop_duplicates(["alias", "label"]).reset_index(drop=True)
    alias_embs = embeddings["aliases"][split.alias_rows(train["alias"])]
    gold_rows = split.label_rows(train["label"])
    gold_scores = np.einsum("ij,ij->i", alias_embs, embeddings["labels"][gold_rows])
    neg_rows, neg_scores = mine_hard_negatives(alias_embs, embeddings["labels"], forbidden_rows(split, train["alias"]),
                                               k, device)
    label_texts = split.labels["label"].to_numpy()
    gold = pd.DataFrame({"alias": train["alias"], "label": train["label"], "score": gold_scores, "gold": True})
    negatives = pd.DataFrame({"alias": np.repeat(train["alias"].to_numpy(), k),
                              "label": label_texts[neg_rows.ravel()], "score": neg_scores.ravel(), "gold": False})
    return pd.concat([gold, negatives], ignore_index=True)


def layer_indices(n_layers: int, keep: int) -> list[int]:
    """Evenly spaced layers, first and last included, as in sentence-transformers' layer-reduction example."""
    if not 1 <= keep <= n_layers:
        raise UserError(f"--student-layers {keep} must be between 1 and the teacher's {n_layers} layers")
    return sorted({int(round(i)) for i in np.linspace(0, n_layers - 1, keep)})


def default_student_layers(n_layers: int) -> int:
    """Half the teacher's layers, rounded up: the design's e5-large (24) to e5-base (12), 3 of MiniLM's 6."""
    return (n_layers + 1) // 2


def reduce_layers(model, keep: int | None, kept: list[int] | None = None) -> list[int]:
    """Drop transformer layers in place; the rest keep the teacher's weights as their start.

    ``keep`` evenly spaced layers (None: ``default_student_layers``), or exactly the teacher layers
    ``kept`` names (0-based). ``model``: a SentenceTransformer or a CrossEncoder, whose first module
    wraps the transformer (for a cross-encoder, with its classification head around the backbone).
    """
    backbone = model[0].auto_model.base_model
    encoder_layers = backbone.encoder.layer
    if kept is None:
        keep = default_student_layers(len(encoder_layers)) if keep is None else keep
        kept = layer_indices(len(encoder_layers), keep)
    elif not kept or sorted(set(kept)) != list(kept) or not 0 <= kept[0] <= kept[-1] < len(encoder_layers):
        raise UserError(f"layers to keep {kept} must be increasing indices from 0 to {len(encoder_layers) - 1}")
    backbone.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in kept])
    backbone.config.num_hidden_layers = len(kept)
    return kept


def with_projection(student, target_dim: int):
    """The student with a Dense map to the teacher's dimension (and re-normalisation) when they differ."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    student_dim = embedding_dim(student)
    if student_dim == target_dim:
        return student
    log.info("student dimension %d != teacher %d: adding a Dense projection", student_dim, target_dim)
    modules = [module for module in student if not isinstance(module, Normalize)]
    projected = SentenceTransformer(modules=[*modules, Dense(student_dim, target_dim, activation_function=None),
                                             Normalize()], device=str(student.device), prompts=student.prompts)
    projected.alias_label_source = student.alias_label_source
    return projected
