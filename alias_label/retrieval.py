"""The one way to encode the candidate tables, index them and search them.

The teacher and student scripts, the evaluator, the lookup script and the notebooks all
call these functions, so a label is encoded, indexed and ranked the same way everywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from alias_label.common import UserError, paths
from alias_label.data import Split
from alias_label.index import build_index, load_index, save_embeddings, save_index, search
from alias_label.lexical import TfidfIndex
from alias_label.metrics import DEPTH, retrieval_metrics
from alias_label.modeling import encode, load_model, model_fingerprint

log = logging.getLogger(__name__)

# Which script rebuilds the indexes of each model; error messages name it.
FIX_COMMANDS = {"teacher": "python scripts/train_alias_label.py", "student": "python scripts/distill_model.py"}
INDEX_SUFFIX = {"teacher": "", "student": "_distilled"}


def index_paths(model_name: str, index_dir: Path | None = None) -> dict[str, Path]:
    index_dir = Path(index_dir or paths().faiss)
    suffix = INDEX_SUFFIX[model_name]
    return {"labels": index_dir / f"labels{suffix}.index", "aliases": index_dir / f"aliases{suffix}.index"}


def cache_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """The teacher's embedding cache, which distillation reads."""
    cache_dir = Path(cache_dir or paths().cache)
    return {"labels": cache_dir / "teacher_label_embs.npy", "aliases": cache_dir / "teacher_alias_embs.npy"}


def cache_meta(model_dir: Path, split: Split, kind: str) -> dict:
    """What a cached embedding matrix depends on; any change makes the cache stale."""
    return {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
            "kind": kind, "normalized": True, "dtype": "float32"}


def encode_candidates(model, split: Split) -> dict[str, np.ndarray]:
    """Labels are encoded as documents and aliases as queries, in both directions of search."""
    log.info("encoding %d labels and %d aliases", len(split.labels), len(split.aliases))
    return {"labels": encode(model, split.labels["label"], kind="document"),
            "aliases": encode(model, split.aliases["alias"], kind="query")}


def write_indexes(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path, model_name: str,
                  index_dir: Path | None = None) -> dict[str, Path]:
    """Write labels(.|_distilled).index and aliases(...).index with self-describing sidecars."""
    targets = index_paths(model_name, index_dir)
    tables = {"labels": split.labels.rename(columns={"label": "text"}),
              "aliases": split.aliases.rename(columns={"alias": "text"})}
    for kind, target in targets.items():
        meta = {"kind": kind, "model": str(model_dir), "model_role": model_name,
                "model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
                "rows": len(tables[kind]), "texts": tables[kind]["text"].tolist(),
                "qids": tables[kind]["qids"].map(list).tolist()}
        save_index(build_index(embeddings[kind]), target, meta)
    return targets


def write_cache(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path,
                cache_dir: Path | None = None) -> None:
    for kind, target in cache_paths(cache_dir).items():
        save_embeddings(target, embeddings[kind], cache_meta(model_dir, split, kind))


def load_indexes(model_name: str, split: Split, index_dir: Path | None = None) -> dict:
    """Both indexes of one model, checked against the current split."""
    loaded = {}
    for kind, path in index_paths(model_name, index_dir).items():
        loaded[kind] = load_index(path, FIX_COMMANDS[model_name], split.fingerprint)
    return loaded


def split_ranking(model, split: Split, split_name: str, label_index, alias_embs: np.ndarray | None = None,
                  depth: int = DEPTH) -> np.ndarray:
    """Label rows ranked for each alias of one split, over every distinct label (full N-way retrieval).

    ``alias_embs`` (one row per alias-table row) saves encoding the aliases again when a caller
    has just encoded all of them.
    """
    aliases = split.pairs(split_name)["alias"]
    queries = encode(model, aliases, kind="query") if alias_embs is None else alias_embs[split.alias_rows(aliases)]
    return search(label_index, queries, depth)[1]


def split_metrics(split: Split, split_name: str, ranked: np.ndarray) -> dict:
    return retrieval_metrics(ranked, split.label_rows(split.pairs(split_name)["label"]))


@dataclass
class Retriever:
    """Search in both directions, dense or lexical, with one interface: texts in, (scores, row ids) out.

    alias -> label ranks rows of data/processed/labels.parquet; label -> alias ranks rows of aliases.parquet.
    """

    name: str
    label_index: object
    alias_index: object
    model: object = None  # None for the lexical retriever, whose indexes take raw text

    def _queries(self, texts, kind: str):
        return list(texts) if self.model is None else encode(self.model, texts, kind=kind)

    def labels_for(self, aliases, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return search_any(self.label_index, self._queries(aliases, "query"), k)

    def aliases_for(self, labels, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return search_any(self.alias_index, self._queries(labels, "document"), k)


def search_any(index, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    # TfidfIndex takes raw text and caps k itself; FAISS indexes go through the shared search.
    return index.search(queries, k) if isinstance(index, TfidfIndex) else search(index, queries, k)


def lexical_retriever(split: Split) -> Retriever:
    return Retriever("tfidf", TfidfIndex(split.labels["label"]), TfidfIndex(split.aliases["alias"]))


def dense_retriever(name: str, model, split: Split) -> Retriever:
    """A retriever over freshly encoded candidates, e.g. for an untrained base model."""
    embeddings = encode_candidates(model, split)
    return Retriever(name, build_index(embeddings["labels"]), build_index(embeddings["aliases"]), model)


def trained_retriever(role: str, split: Split, device: str = "cpu", index_dir: Path | None = None) -> Retriever:
    """The trained teacher or student with the indexes written for it, all checked against the split."""
    model_dir = paths().teacher if role == "teacher" else paths().student
    if not (model_dir / "training_config.json").exists():
        raise UserError(f"no trained {role} at {model_dir}. Build it with: {FIX_COMMANDS[role]}")
    indexes = load_indexes(role, split, index_dir)
    fingerprint = model_fingerprint(model_dir)
    for kind, (_, meta) in indexes.items():
        if meta["model_fingerprint"] != fingerprint:
            raise UserError(f"{kind} index of the {role} was built by another model than {model_dir}. "
                            f"Rebuild it with: {FIX_COMMANDS[role]}")
    model = load_model(model_dir, device)
    return Retriever(role, indexes["labels"][0], indexes["aliases"][0], model)


def lookup(retriever: Retriever, split: Split, queries, k: int = 10, reverse: bool = False,
           min_score: float | None = None) -> pd.DataFrame:
    """Ranked matches for each query, as a table: query, rank, qid, label (or alias), score, confident.

    Forward, an alias finds labels; with ``reverse``, a label finds aliases. Below ``min_score``
    the top match is reported as not confident rather than dropped, so every query has a row.
    """
    queries = list(queries)
    table, column = (split.aliases, "alias") if reverse else (split.labels, "label")
    scores, ids = (retriever.aliases_for if reverse else retriever.labels_for)(queries, k)
    rows = []
    for query, row_scores, row_ids in zip(queries, scores, ids, strict=True):
        confident = min_score is None or row_scores[0] >= min_score
        for rank, (score, row) in enumerate(zip(row_scores, row_ids, strict=True), start=1):
            rows.append({"query": query, "rank": rank, "qid": "|".join(table["qids"].iloc[row]),
                         column: table[column].iloc[row], "score": round(float(score), 4), "confident": confident})
    return pd.DataFrame(rows, columns=["query", "rank", "qid", column, "score", "confident"])
