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

from alias_label.augment import transliterate
from alias_label.common import UserError, paths, read_json, write_json
from alias_label.data import Split
from alias_label.hybrid import FUSION_DEPTH, HybridRetriever, confident, fit_abstain, fit_fusion_weight, fuse
from alias_label.index import KeyedIndex, build_index, load_index, save_embeddings, save_index, spec_from_args
from alias_label.lexical import TfidfIndex
from alias_label.metrics import DEPTH, retrieval_metrics
from alias_label.modeling import embedding_dim, encode, load_model, model_fingerprint, quantize_int8

log = logging.getLogger(__name__)

# Which script rebuilds the indexes of each model; error messages name it.
FIX_COMMANDS = {"teacher": "python scripts/train_alias_label.py", "student": "python scripts/distill_model.py"}
INDEX_SUFFIX = {"teacher": "", "student": "_distilled"}
CALIBRATION_FILE = "calibration.json"


def index_paths(model_name: str, index_dir: Path | None = None) -> dict[str, Path]:
    index_dir = Path(index_dir or paths().faiss)
    suffix = INDEX_SUFFIX[model_name]
    return {"labels": index_dir / f"labels{suffix}.index", "aliases": index_dir / f"aliases{suffix}.index"}


def cache_paths(cache_dir: Path | None = None) -> dict[str, Path]:
    """The teacher's embedding cache, which distillation reads."""
    cache_dir = Path(cache_dir or paths().cache)
    return {"labels": cache_dir / "teacher_label_embs.npy", "aliases": cache_dir / "teacher_alias_embs.npy",
            "label_keys": cache_dir / "teacher_label_key_embs.npy"}


def cache_meta(model_dir: Path, split: Split, kind: str) -> dict:
    """What a cached embedding matrix depends on; any change makes the cache stale."""
    return {"model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint,
            "kind": kind, "normalized": True, "dtype": "float32"}


def label_keys(split: Split) -> pd.DataFrame:
    """The other string each label is indexed under: its transliteration, where it differs.

    A mostly-Latin vocabulary (MiniLM's, e5's) reads a Cyrillic, Greek or CJK label as rare word
    pieces, while its romanised form ("Moskovskii gosudarstvennyi universitet") shares words with
    the Latin aliases people write. A label is found through whichever of its keys is closer.
    """
    labels = split.labels["label"]
    folded = labels.map(lambda label: transliterate(label, set()))
    same = folded.fillna("").str.casefold() == labels.str.split().str.join(" ").str.casefold()
    keep = (folded.notna() & ~same).to_numpy()
    return pd.DataFrame({"text": folded[keep].tolist(), "row": np.flatnonzero(keep)})


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
    texts = split.labels["label"].tolist()
    extra = label_keys(split) if keys == "transliterated" else None
    if extra is None or not len(extra):
        return texts, None
    return texts + extra["text"].tolist(), np.concatenate([np.arange(len(texts)), extra["row"].to_numpy()])


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
    qids of its label, and ``label_rows`` maps every row to its label.
    """
    meta = {"kind": kind, "model": str(model_dir), "model_role": model_name,
            "model_fingerprint": model_fingerprint(model_dir), "data_fingerprint": split.fingerprint}
    if kind == "aliases":
        return {**meta, "rows": len(split.aliases), "texts": split.aliases["alias"].tolist(),
                "qids": split.aliases["qids"].map(list).tolist()}
    texts, rows = keyed_labels(split, keys)
    qids = split.labels["qids"].map(list).tolist()
    meta.update(rows=len(texts), texts=texts)
    if rows is None:
        return {**meta, "qids": qids}
    return {**meta, "qids": [qids[row] for row in rows], "label_keys": keys, "label_rows": rows.tolist()}


def write_indexes(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path, model_name: str,
                  index_dir: Path | None = None, index_args=None) -> dict[str, Path]:
    """Write labels(.|_distilled).index and aliases(...).index with self-describing sidecars.

    ``index_args`` (the --index flags) picks the index type and the label keys; the index's
    parameters scale with each table.
    """
    keys = index_args.label_keys if index_args else "transliterated"
    targets = index_paths(model_name, index_dir)
    for kind, target in targets.items():
        vectors = index_vectors(embeddings, kind, keys)
        spec = spec_from_args(index_args, *vectors.shape) if index_args else None
        save_index(build_index(vectors, spec), target, index_table_meta(split, kind, model_dir, model_name, keys))
    return targets


def write_cache(embeddings: dict[str, np.ndarray], split: Split, model_dir: Path,
                cache_dir: Path | None = None) -> None:
    for kind, target in cache_paths(cache_dir).items():
        save_embeddings(target, embeddings[kind], cache_meta(model_dir, split, kind))


def load_indexes(model_name: str, split: Split, index_dir: Path | None = None) -> dict:
    """Both indexes of one model, checked against the current split."""
    loaded = {}
    for kind, path in index_paths(model_name, index_dir).items():
        index, meta = load_index(path, FIX_COMMANDS[model_name], split.fingerprint)
        loaded[kind] = (KeyedIndex(index, np.array(meta["label_rows"])) if "label_rows" in meta else index, meta)
    return loaded


def split_ranking(model, split: Split, split_name: str, label_index, alias_embs: np.ndarray | None = None,
                  depth: int = DEPTH) -> np.ndarray:
    """Label rows ranked for each alias of one split, over every distinct label (full N-way retrieval).

    ``alias_embs`` (one row per alias-table row) saves encoding the aliases again when a caller
    has just encoded all of them.
    """
    aliases = split.pairs(split_name)["alias"]
    queries = encode(model, aliases, kind="query") if alias_embs is None else alias_embs[split.alias_rows(aliases)]
    return label_index.search(queries, depth)[1]


def split_metrics(split: Split, split_name: str, ranked: np.ndarray) -> dict:
    return retrieval_metrics(ranked, split.label_rows(split.pairs(split_name)["label"]))


@dataclass
class Retriever:
    """Search in both directions, dense or lexical, with one interface: texts in, (scores, row ids) out.

    alias -> label ranks rows of data/processed/labels.parquet; label -> alias ranks rows of aliases.parquet.
    """

    name: str
    # A DenseIndex (embeddings in) or a TfidfIndex (text in): both search(queries, k), k capped at their size.
    label_index: object
    alias_index: object
    model: object = None  # None for the lexical retriever, whose indexes take raw text
    abstain: dict | None = None  # calibrated threshold and margin; None accepts every match

    def _queries(self, texts, kind: str):
        return list(texts) if self.model is None else encode(self.model, texts, kind=kind)

    def labels_for(self, aliases, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.label_index.search(self._queries(aliases, "query"), k)

    def aliases_for(self, labels, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return self.alias_index.search(self._queries(labels, "document"), k)


def lexical_retriever(split: Split, keys: str = "label") -> Retriever:
    """TF-IDF over the labels' texts: the baseline; with transliterated keys, the hybrid's lexical side."""
    texts, rows = keyed_labels(split, keys)
    label_index = TfidfIndex(texts) if rows is None else KeyedIndex(TfidfIndex(texts), rows)
    return Retriever("tfidf", label_index, TfidfIndex(split.aliases["alias"]))


def keys_of(retriever: Retriever) -> str:
    """The label keys a dense retriever's index was built with; its hybrid's lexical side uses the same."""
    return "transliterated" if isinstance(retriever.label_index, KeyedIndex) else "label"


def dense_retriever(name: str, model, split: Split, keys: str = "transliterated") -> Retriever:
    """A retriever over freshly encoded candidates, e.g. for an untrained base model."""
    embeddings = encode_candidates(model, split)
    return Retriever(name, build_label_index(embeddings, split, keys), build_index(embeddings["aliases"]), model)


def model_dir_of(role: str) -> Path:
    return paths().teacher if role == "teacher" else paths().student


def int8_by_default(role: str, device: str) -> bool:
    """Whether a model queried for lookups runs int8 unless told otherwise: the student on a CPU.

    The student exists to answer fast on a CPU, and in int8 it encodes a query about 1.5x as fast
    with the same test top-1 (README, "int8 on a CPU"). The teacher stays float32: its int8 copy
    changes the top-1 of about one test alias in eight. Artifacts (indexes, calibration) are always
    made by the float32 model.
    """
    return role == "student" and str(device) == "cpu"


def trained_retriever(role: str, split: Split, device: str = "cpu", index_dir: Path | None = None,
                      mode: str = "dense", int8: bool | None = False, int8_scheme: str = "per-channel"):
    """The trained teacher or student with the indexes written for it, all checked against the split.

    ``mode="hybrid"`` fuses it with TF-IDF using the weight and exponent fitted on validation. Either way the
    retriever carries the calibrated abstain setting of its mode (``None`` when uncalibrated).
    ``int8`` runs the model's Linear layers in int8 (CPU only), quantised as ``int8_scheme`` says
    (``alias_label.modeling.INT8_SCHEMES``); ``None`` does so where ``int8_by_default`` says. The
    indexes and calibration stay those of the float32 model.
    """
    if int8 is None:
        int8 = int8_by_default(role, device)
    model_dir = model_dir_of(role)
    if not (model_dir / "training_config.json").exists():
        raise UserError(f"no trained {role} at {model_dir}. Build it with: {FIX_COMMANDS[role]}")
    indexes = load_indexes(role, split, index_dir)
    fingerprint = model_fingerprint(model_dir)
    for kind, (_, meta) in indexes.items():
        if meta["model_fingerprint"] != fingerprint:
            raise UserError(f"{kind} index of the {role} was built by another model than {model_dir}. "
                            f"Rebuild it with: {FIX_COMMANDS[role]}")
    model = load_model(model_dir, device)
    model = quantize_int8(model, int8_scheme) if int8 else model
    dense = Retriever(role, indexes["labels"][0], indexes["aliases"][0], model)
    calibration = load_calibration(model_dir, role, split, required=mode == "hybrid")
    dense.abstain = calibration["abstain"]["dense"] if calibration else None
    return dense if mode == "dense" else hybrid_of(dense, split, calibration)


def hybrid_of(dense: Retriever, split: Split, calibration: dict, lexical: Retriever | None = None) -> HybridRetriever:
    """A trained model's retriever fused with TF-IDF at its calibrated weight and exponent, with its hybrid abstain."""
    fusion = calibration["fusion"]
    # Calibrations fitted before the exponent was fitted used the plain weighted sum.
    return HybridRetriever(f"{dense.name}_hybrid", dense, lexical or lexical_retriever(split, keys_of(dense)),
                           fusion["weight"], fusion["depth"], calibration["abstain"]["hybrid"],
                           fusion.get("exponent", 1.0))


def calibration_command(role: str) -> str:
    return f"python scripts/calibrate.py --model {role}"


def load_calibration(model_dir: Path, role: str, split: Split, required: bool = True) -> dict | None:
    """The fusion weight and abstain settings fitted for this model on this split."""
    path = model_dir / CALIBRATION_FILE
    if not path.exists():
        if required:
            raise UserError(f"the {role} has no {CALIBRATION_FILE} (fusion weight, abstain threshold). "
                            f"Fit it with: {calibration_command(role)}")
        return None
    calibration = read_json(path)
    stale = {"data_fingerprint": split.fingerprint, "model_fingerprint": model_fingerprint(model_dir)}
    for key, value in stale.items():
        if calibration.get(key) != value:
            if required:
                raise UserError(f"{path} was fitted for another {key.split('_')[0]} than the current one. "
                                f"Refit it with: {calibration_command(role)}")
            log.warning("ignoring stale %s (%s changed); refit it with: %s", path, key, calibration_command(role))
            return None
    return calibration


def calibrate(model_dir: Path, role: str, split: Split, dense: Retriever, target_precision: float = 0.95) -> dict:
    """Fit the fusion weight and both modes' abstain settings on validation; save them with the model."""
    pairs = split.pairs("val")
    gold = split.label_rows(pairs["label"])
    dense_result = dense.labels_for(pairs["alias"], FUSION_DEPTH)
    lexical_result = lexical_retriever(split, keys_of(dense)).labels_for(pairs["alias"], FUSION_DEPTH)
    fusion = fit_fusion_weight(dense_result, lexical_result, gold)
    hybrid_result = fuse(dense_result, lexical_result, fusion["weight"], FUSION_DEPTH, fusion["exponent"])
    abstain = {}
    for mode, (scores, ids) in {"dense": dense_result, "hybrid": hybrid_result}.items():
        abstain[mode] = fit_abstain(scores, ids[:, 0] == gold, target_precision)
        log.info("%s %s abstain: score >= %.4f and margin >= %.4f -> val precision %.3f, coverage %.3f%s", role,
                 mode, abstain[mode]["threshold"], abstain[mode]["margin"], abstain[mode]["val"]["precision"],
                 abstain[mode]["val"]["coverage"], "" if abstain[mode]["met_target"] else " (target not met)")
    calibration = {"role": role, "split": "val", "data_fingerprint": split.fingerprint,
                   "model_fingerprint": model_fingerprint(model_dir), "fusion": fusion, "abstain": abstain}
    write_json(model_dir / CALIBRATION_FILE, calibration)
    return calibration


def lookup(retriever, split: Split, queries, k: int = 10, reverse: bool = False,
           min_score: float | None = None) -> pd.DataFrame:
    """Ranked matches for each query, as a table: query, rank, qid, label (or alias), score, confident.

    Forward, an alias finds labels; with ``reverse``, a label finds aliases. A top match is
    confident when it clears the retriever's calibrated threshold and margin (alias -> label only,
    the direction they were fitted on), or ``min_score`` when given. A match that is not confident
    is still reported, flagged, so every query has its rows.
    """
    queries = list(queries)
    table, column = (split.aliases, "alias") if reverse else (split.labels, "label")
    # The margin to the runner-up needs a second candidate even when one match is asked for.
    scores, ids = (retriever.aliases_for if reverse else retriever.labels_for)(queries, max(k, 2))
    if min_score is not None:
        abstain = {"threshold": min_score, "margin": 0.0}
    else:
        abstain = None if reverse else getattr(retriever, "abstain", None)
    is_confident = confident(scores, abstain)
    rows = []
    for query, row_scores, row_ids, sure in zip(queries, scores[:, :k], ids[:, :k], is_confident, strict=True):
        for rank, (score, row) in enumerate(zip(row_scores, row_ids, strict=True), start=1):
            rows.append({"query": query, "rank": rank, "qid": "|".join(table["qids"].iloc[row]),
                         column: table[column].iloc[row], "score": round(float(score), 4), "confident": bool(sure)})
    return pd.DataFrame(rows, columns=["query", "rank", "qid", column, "score", "confident"])
