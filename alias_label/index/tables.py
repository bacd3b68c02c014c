"""The rows of a model's two indexes: labels (with their transliterated keys) and aliases.

Each index's sidecar holds its id -> text table and the qids of every row, so a trained model and
its indexes answer lookups without the split files.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.data.split import Split
from alias_label.data.text import transliterate
from alias_label.index.dense import KeyedIndex, build_index
from alias_label.models.encode import encode
from alias_label.models.load import embedding_dim, model_fingerprint
from alias_label.paths import paths

log = logging.getLogger(__name__)


INDEX_SUFFIX = {"teacher": "", "student": "_distilled"}


def index_paths(model_name: str, index_dir: Path | None = None) -> dict[str, Path]:
    index_dir = Path(index_dir or paths().faiss)
    suffix = INDEX_SUFFIX[model_name]
    return {"labels": index_dir / f"labels{suffix}.index", "aliases": index_dir / f"aliases{suffix}.index"}


def other_keys(texts) -> pd.DataFrame:
    """The other string each text is indexed under: its transliteration, where it differs beyond case
    and spacing; ``row`` is the text's position."""
    texts = pd.Series(list(texts), dtype=object)
    folded = texts.map(transliterate)
    same = folded.fillna("").str.casefold() == texts.str.split().str.join(" ").str.casefold()
    keep = (folded.notna() & ~same).to_numpy()
    return pd.DataFrame({"text": folded[keep].tolist(), "row": np.flatnonzero(keep)})


def keyed_texts(texts) -> tuple[list[str], np.ndarray | None]:
    """Every text, then its other keys, and the text row of each; None when no text has another key."""
    texts = list(texts)
    extra = other_keys(texts)
    if not len(extra):
        return texts, None
    return texts + extra["text"].tolist(), np.concatenate([np.arange(len(texts)), extra["row"].to_numpy()])


def label_keys(split: Split) -> pd.DataFrame:
    """The other string each label is indexed under: its transliteration, where it differs.

    A mostly-Latin vocabulary (MiniLM's, e5's) reads a Cyrillic, Greek or CJK label as rare word
    pieces, while its romanised form ("Moskovskii gosudarstvennyi universitet") shares words with
    the Latin aliases people write. A label is found through whichever of its keys is closer.
    """
    return other_keys(split.labels["label"])


def encode_candidates(model, split: Split) -> dict[str, np.ndarray]:
    """Labels (and their other keys) are encoded as documents and aliases as queries."""
    keys = label_keys(split)["text"].tolist()
    log.info("encoding %d labels, %d transliterated label keys and %d aliases", len(split.labels), len(keys),
             len(split.aliases))
    return {"labels": encode(model, split.labels["label"], kind="document"),
            "aliases": encode(model, split.aliases["alias"], kind="query"),
            "label_keys": encode(model, keys, kind="document") if keys else np.empty((0, embedding_dim(model)),
                                                                                     np.float32)}


def keyed_labels(split: Split, keys: str) -> tuple[list[str], np.ndarray | None]:
    """The text of every row of a label index with ``keys`` (the labels, then their other keys),
    and the label row of each; None when the rows are the labels, one to one."""
    if keys != "transliterated":
        return split.labels["label"].tolist(), None
    return keyed_texts(split.labels["label"])


def index_vectors(embeddings: dict[str, np.ndarray], kind: str, keys: str) -> np.ndarray:
    """The rows of one index: for labels with transliterated keys, every label's vector, then its keys'."""
    if kind == "labels" and keys == "transliterated" and len(embeddings["label_keys"]):
        return np.vstack([embeddings["labels"], embeddings["label_keys"]])
    return embeddings[kind]


def build_label_index(embeddings: dict[str, np.ndarray], split: Split, keys: str = "transliterated", spec=None):
    """The alias -> label index; with transliterated keys, each label scores by its closer key."""
    index = build_index(index_vectors(embeddings, "labels", keys), spec)
    rows = keyed_labels(split, keys)[1]
    return index if rows is None else KeyedIndex(index, rows)


def index_table_meta(split: Split, kind: str, model_dir: Path, model_name: str, keys: str) -> dict:
    """The sidecar content of one index: which model, which split, and the id -> text table.

    A label index with transliterated keys lists its key rows after the labels, each with the
    qids of its label, and ``label_rows`` maps every row to its label. ``websites`` holds each
    label's entities' websites (the reranker matches a query against the site's name).
    """
    meta = {"kind": kind, "model": str(model_dir), "model_role": model_name,
            "model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint}
    if kind == "aliases":
        return {**meta, "rows": len(split.aliases), "texts": split.aliases["alias"].tolist(),
                "qids": split.aliases["qids"].map(list).tolist()}
    texts, rows = keyed_labels(split, keys)
    qids = split.labels["qids"].map(list).tolist()
    meta.update(rows=len(texts), texts=texts, websites=split.labels["websites"].map(list).tolist())
    if rows is None:
        return {**meta, "qids": qids}
    return {**meta, "qids": [qids[row] for row in rows], "label_keys": keys, "label_rows": rows.tolist()}


@dataclass
class Candidates:
    """What a model's indexes rank: the label and alias tables (each row with its qids) and the label keys.

    The rows of the label index are ``key_texts``: every label, then each label's other keys, whose
    label rows ``key_rows`` gives (None when the rows are the labels, one to one).
    """

    labels: pd.DataFrame  # label, qids, websites
    aliases: pd.DataFrame  # alias, qids
    key_texts: list[str]
    key_rows: np.ndarray | None
    data_fingerprint: str

    @classmethod
    def from_split(cls, split: Split, keys: str = "transliterated") -> Candidates:
        texts, rows = keyed_labels(split, keys)
        return cls(split.labels[["label", "qids", "websites"]], split.aliases[["alias", "qids"]], texts, rows,
                   split.fingerprint)

    @classmethod
    def from_sidecars(cls, label_meta: dict, alias_meta: dict) -> Candidates:
        """The tables as the index sidecars hold them, so no split files are needed."""
        rows = np.array(label_meta["label_rows"]) if "label_rows" in label_meta else None
        n_labels = int(rows.max()) + 1 if rows is not None and len(rows) else label_meta["rows"]
        labels = pd.DataFrame({"label": label_meta["texts"][:n_labels], "qids": label_meta["qids"][:n_labels],
                               "websites": label_meta["websites"]})
        aliases = pd.DataFrame({"alias": alias_meta["texts"], "qids": alias_meta["qids"]})
        return cls(labels, aliases, list(label_meta["texts"]), rows, label_meta["data_fingerprint"])
