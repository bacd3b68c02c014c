"""A cross-encoder's scores as two more reranker features, and loading one from a model folder.

A bi-encoder compares two embeddings made apart; a cross-encoder reads the alias and a candidate
label together, so it can weigh which words of one answer which of the other. On a CPU it costs
a forward pass per pair, so it scores only each alias's ``top`` candidates by the hybrid's fused
score, the ones a right answer is almost always among; the others get no score, which LightGBM
reads as missing. The features are its score and its gap to the alias's best.

A student's cross-encoder starts from its teacher's with half the layers and scores fewer
candidates; where the student's encoder runs int8 on a CPU, so does its cross-encoder.

A model's cross-encoder lives in its folder, ``cross_encoder/``, with the record of how it was
trained (``training_config.json``: the data and the bi-encoder it mined negatives from). The
reranker's sidecar names the cross-encoder it was fitted with, and a lookup refuses another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from alias_label.errors import UserError
from alias_label.index.bundle import model_name
from alias_label.io import read_json
from alias_label.models.load import CROSS_ENCODER_DIR, model_fingerprint, without_loading_bar
from alias_label.models.quantize import quantize_int8
from alias_label.models.traced import trace_pairs
from alias_label.search.features import COLUMN

CROSS_FEATURES = ["cross_encoder", "cross_encoder_gap"]
CROSS_TOP = 20
STUDENT_CROSS_TOP = 3  # each scored candidate costs the student's fast lookups a forward pass


def cross_dir(model_dir: Path) -> Path:
    return Path(model_dir) / CROSS_ENCODER_DIR


def has_cross_encoder(model_dir: Path) -> bool:
    return (cross_dir(model_dir) / "training_config.json").exists()


def head(matrix: np.ndarray, top: int) -> np.ndarray:
    """The positions of an alias's ``top`` candidates by the hybrid's fused score: those the cross-encoder scores."""
    return np.argsort(-matrix[:, COLUMN["fused"]], kind="stable")[:top]


@dataclass
class PairModel:
    """A cross-encoder's network called directly: each pair read together, its one logit's sigmoid.

    This is the forward pass sentence-transformers' ``CrossEncoder.predict`` runs for a model with
    one output, without its per-call walk over every module (evaluation mode, device), which costs
    a lookup of a few pairs more than the pairs themselves; on a CPU, through the network's trace
    where it holds (``alias_label.models.traced``).
    """

    network: torch.nn.Module  # a transformers sequence-classification model with one output
    tokenizer: object
    max_length: int | None
    device: str = "cpu"
    traced: Callable | None = None  # the network's trace: its tokeniser's tensors -> logits

    def predict(self, pairs: list[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """One score per pair, in input order. Pairs past one batch are batched by token count, so
        each batch pads to little more than its own length, not to the longest label nearby."""
        if not pairs:
            return np.empty(0, np.float32)
        if len(pairs) <= batch_size:
            return self._scores(self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                                               truncation=True, max_length=self.max_length, return_tensors="pt"))
        encoded = self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], truncation=True,
                                 max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        scores = np.empty(len(pairs), dtype=np.float32)
        for start in range(0, len(pairs), batch_size):
            rows = order[start:start + batch_size]
            batch = self.tokenizer.pad({key: [values[i] for i in rows] for key, values in encoded.items()},
                                       return_tensors="pt")
            scores[rows] = self._scores(batch)
        return scores

    def _scores(self, inputs) -> np.ndarray:
        """The sigmoid of the network's one logit for each pair of a tokenised, padded batch."""
        with torch.inference_mode():
            inputs = inputs.to(self.device)
            logits = (self.network(**inputs).logits if self.traced is None else self.traced(dict(inputs)))[:, 0]
            return torch.sigmoid(logits.float()).cpu().numpy()


@dataclass
class CrossScorer:
    """A trained cross-encoder and how many candidates of each alias it scores."""

    model: object  # a PairModel: predict(pairs, batch_size) -> one score per pair
    labels: np.ndarray  # the label texts, by label row
    top: int = CROSS_TOP
    fingerprint: str = ""
    batch_size: int = 32  # larger batches run slower per pair on a CPU, their activations out of cache

    def scores(self, aliases: list[str], rows: list[np.ndarray], matrices: list[np.ndarray]) -> list[np.ndarray]:
        """Per alias, the cross-encoder's score of each candidate among its ``top``, NaN for the rest."""
        heads = [head(matrix, self.top) for matrix in matrices]
        pairs = [[(alias, self.labels[r[i]]) for i in h] for alias, r, h in zip(aliases, rows, heads, strict=True)]
        if self.alone:
            chunks = [self._predict(alias_pairs) for alias_pairs in pairs]
        else:
            flat = self._predict([pair for alias_pairs in pairs for pair in alias_pairs])
            chunks = np.split(flat, np.cumsum([len(h) for h in heads])[:-1])
        out = []
        for r, h, chunk in zip(rows, heads, chunks, strict=True):
            full = np.full(len(r), np.nan, dtype=np.float32)
            full[h] = chunk
            out.append(full)
        return out

    @property
    def alone(self) -> bool:
        """Whether each alias's pairs are scored as a batch of their own, as when the alias is looked up
        alone: on a CPU. Padded with other aliases' pairs, or quantised with them in int8, its scores
        would move with its batch-mates (``alias_label.models.encode.encode_alone``). A GPU keeps its
        batches."""
        return str(getattr(self.model, "device", "cpu")) == "cpu"

    def _predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        if not pairs:
            return np.empty(0, np.float32)
        return np.asarray(self.model.predict(pairs, batch_size=self.batch_size), dtype=np.float32)

    def extend(self, aliases: list[str], rows: list[np.ndarray], matrices: list[np.ndarray]) -> list[np.ndarray]:
        """The feature matrices with ``CROSS_FEATURES`` as two more columns."""
        return with_cross_features(matrices, self.scores(aliases, rows, matrices))


def with_cross_features(matrices: list[np.ndarray], scores: list[np.ndarray]) -> list[np.ndarray]:
    """Each matrix with the cross-encoder's score and its gap to the alias's best score appended."""
    extended = []
    for matrix, score in zip(matrices, scores, strict=True):
        best = np.nanmax(score) if np.isfinite(score).any() else 0.0
        extended.append(np.column_stack([matrix, score, score - best]).astype(np.float32))
    return extended


def cross_command(model_dir: Path) -> str:
    """The command that trains a model folder's cross-encoder (and refits its reranker with it)."""
    return f"python scripts/train_cross_encoder.py --model {model_name(model_dir)}"


def load_cross_encoder(model_dir: Path, labels: np.ndarray, device: str, expected: str | None = None,
                       int8_scheme: str | None = None) -> CrossScorer:
    """The model folder's cross-encoder over these label texts, checked against the bi-encoder it was
    trained with and, when ``expected`` is given, against the fingerprint the reranker was fitted with.
    ``int8_scheme`` runs its Linear layers in int8 (CPU only), as the bi-encoder's lookups run."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder, fix = cross_dir(model_dir), cross_command(model_dir)
    if not has_cross_encoder(model_dir):
        raise UserError(f"{model_dir} has no cross-encoder ({CROSS_ENCODER_DIR}/), but its reranker was fitted with "
                        f"one. Train it with: {fix}")
    record = read_json(folder / "training_config.json")
    fingerprint = model_fingerprint(folder)
    if record.get("bi_encoder_fingerprint") != model_fingerprint(model_dir):
        raise UserError(f"{folder} was trained on the candidates of another model than {model_dir} (stale). "
                        f"Retrain it with: {fix}")
    if expected is not None and fingerprint != expected:
        raise UserError(f"{folder} is not the cross-encoder the reranker of {model_dir} was fitted with (stale or "
                        f"damaged). Retrain it with: {fix}")
    with without_loading_bar():
        network = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device).eval()
    if int8_scheme is not None:
        network = quantize_int8(network, int8_scheme)
    tokenizer, max_length = AutoTokenizer.from_pretrained(str(folder)), record.get("max_length")
    model = PairModel(network, tokenizer, max_length, device,
                      trace_pairs(network, tokenizer, max_length) if device == "cpu" else None)
    return CrossScorer(model, np.asarray(labels, dtype=object), int(record.get("top", CROSS_TOP)), fingerprint)
