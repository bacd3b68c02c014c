"""The public way in: a trained model, its indexes and its calibration, loaded as one Retriever.

    from alias_label import load_retriever
    retriever = load_retriever("teacher")        # or "student", or a model folder
    retriever.lookup(["UdeG", "MIT"], k=5)       # DataFrame: input_row, query, rank, qid, label, score, ...

``load_retriever`` reads only the model folder and the indexes its ``indexes.json`` names; the
candidate tables come from the index sidecars. The defaults are the lookup script's: reranked
search (the first stage's candidates scored by the reranker fitted on validation), the
calibrated abstain, and the student in int8 on a CPU.
"""

from __future__ import annotations

import argparse
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from alias_label.data.text import clean_query
from alias_label.errors import UserError
from alias_label.index.bundle import fix_command, load_bundle_indexes, model_folder, require_trained
from alias_label.index.tables import Candidates
from alias_label.models.load import load_model, pick_device
from alias_label.models.quantize import INT8_SCHEMES, int8_by_default, quantize_int8
from alias_label.models.traced import trace_encoder
from alias_label.search.abstain import confident, rounded
from alias_label.search.calibration import CALIBRATION_FILE, calibration_command, load_calibration
from alias_label.search.cross import CROSS_FEATURES, load_cross_encoder
from alias_label.search.rerank import FirstStage, RerankSearcher, load_reranker
from alias_label.search.searchers import Searcher, hybrid_of

log = logging.getLogger(__name__)

MODES = ("rerank", "hybrid", "dense")
# The label or alias column comes after qid.
LOOKUP_COLUMNS = ["input_row", "query", "rank", "qid", "score", "confidence", "confident"]
LOOKUP_BATCH = 256  # distinct queries searched at a time by ``Retriever.lookup``


def written_form(text: str) -> str:
    """A name as the exact-label rule compares it: as a lookup reads it, up to case."""
    return clean_query(text).casefold()


def answer_names(column: str) -> list[str]:
    """The text columns of an answer: a label; or an alias, then the label of the entity it names."""
    return ["alias", "label"] if column == "alias" else [column]


def no_match(query: str, column: str) -> dict:
    """The one row of a query without a match: a blank one, or one that has no candidate."""
    return {"query": query, "rank": pd.NA, "qid": "", **dict.fromkeys(answer_names(column), ""), "score": None,
            "confidence": None, "confident": False}


def lookup_table(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """``lookup``'s rows as a table, each column built with its type (ranks as nullable integers,
    scores as floats): casting a built table afterwards would take longer than a small search."""
    data = {name: [row[name] for row in rows] for name in columns}
    data["rank"] = pd.array(data["rank"], dtype="Int64")
    for name in ("score", "confidence"):
        data[name] = np.array([np.nan if value is None else value for value in data[name]], dtype=float)
    return pd.DataFrame(data, columns=columns)


def input_rows(queries, texts: list[str]) -> list:
    """Where each of ``texts`` (``queries`` as ``query_texts`` reads them) came from, to join the
    answers back on: a column's index labels (its table's rows), else each query's position."""
    return queries.index.tolist() if isinstance(queries, pd.Series) else list(range(len(texts)))


def query_texts(queries) -> list[str]:
    """``queries`` as a list of strings, a missing value (None, NaN) as a blank one; anything else
    that is not text is refused, as searching its printed form would answer a question nobody asked."""
    if isinstance(queries, pd.DataFrame):
        # Iterating a table gives its column names: they would be searched instead of its cells.
        raise UserError(f"queries is a table with columns {list(queries.columns)}; pass one column of it, "
                        "e.g. table[\"name\"]")
    texts = [queries] if isinstance(queries, str) else list(queries)
    for position, query in enumerate(texts):
        if not isinstance(query, str) and not (query is None or (pd.api.types.is_scalar(query) and pd.isna(query))):
            raise UserError(f"query {position} is {type(query).__name__} {query!r}, not text. Pass strings "
                            "(e.g. table[column].astype(str)); None or NaN is a blank query.")
    return [query if isinstance(query, str) else "" for query in texts]


def add_retriever_args(parser) -> None:
    """The flags of ``load_retriever``, for every script that looks things up: model, mode, device, int8."""
    parser.add_argument("--model", default="teacher",
                        help="teacher, student, or a trained model folder (default: teacher)")
    parser.add_argument("--mode", default="rerank", choices=MODES,
                        help="rerank: every channel's candidates scored by the fitted reranker; hybrid: the model "
                             "fused with TF-IDF at the weight and exponent fitted on validation; dense: the model's "
                             "FAISS index alone (default: rerank)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="where the model runs")
    parser.add_argument("--int8", action=argparse.BooleanOptionalAction, default=None,
                        help="run the model's Linear layers in int8 (CPU only), or not (--no-int8); by default the "
                             "student runs int8 on a CPU and the teacher float32 (docs/speed.md)")
    add_int8_scheme_arg(parser)


def add_int8_scheme_arg(parser) -> None:
    """The ``--int8-scheme`` flag, shared by every script that can run a model in int8."""
    parser.add_argument("--int8-scheme", default="per-channel", choices=INT8_SCHEMES,
                        help="how int8 quantises: a weight scale per output channel (default), one per matrix "
                             "(per-tensor, torch's default), or per channel with each layer's feed-forward output "
                             "left in float32 (closer to float32, a little slower; docs/speed.md)")


@dataclass
class Retriever:
    """A searcher with the tables it ranks and the abstain setting of its mode: lookups in both directions."""

    name: str
    searcher: object  # a Searcher or HybridSearcher: labels_for / aliases_for -> (scores, row ids)
    candidates: Candidates
    abstain: dict | None  # the calibrated setting of this mode (what it reads, threshold, margin); None accepts all
    calibration: dict | None = None
    model_dir: Path | None = None
    int8_scheme: str | None = None  # how the model's lookups run int8, None for float

    def __repr__(self) -> str:
        # One line: the default one would print the model, both indexes and every candidate label.
        return (f"Retriever({self.name!r}, model={str(self.model_dir)!r}, labels={len(self.candidates.labels)}, "
                f"aliases={len(self.candidates.aliases)}, int8={self.int8_scheme!r}, "
                f"confident_when={self.confident_when()!r})")

    def confident_when(self) -> str:
        """The abstain setting in words: what a top answer must clear to be flagged confident."""
        exact = "the query is its label as written"
        if not self.abstain:
            return f"only when {exact} (no calibrated setting)"
        if not self.vouches:
            return f"only when {exact} (the setting missed its precision target on validation)"
        reads = "probability right" if self.abstain.get("reads") == "probability" else "score"
        margin = f", {self.abstain['margin']:.3f} above the runner-up" if self.abstain.get("margin") else ""
        return f"{reads} >= {self.abstain['threshold']:.3f}{margin}, or {exact}"

    @functools.cached_property
    def owners_of_form(self) -> dict[str, set[str]]:
        """Each written form (``written_form``) of a label or alias -> the qids of every name that reads so."""
        owners: dict[str, set[str]] = {}
        for table, column in ((self.candidates.labels, "label"), (self.candidates.aliases, "alias")):
            for name, qids in zip(table[column], table["qids"], strict=True):
                owners.setdefault(written_form(name), set()).update(qids)
        return owners

    def exact_label_answers(self, texts, top_rows: np.ndarray) -> np.ndarray:
        """Which queries' top answers are their own label, as written up to case, and so right
        whatever the model's scores: as long as no label or alias of another entity reads the same
        (then the query could mean that entity). The calibrated setting never saw such a query, as
        the data keeps no alias equal to a label, and often leaves it below the threshold."""
        labels, qids = self.answer_columns["label"][0], self.candidates.labels["qids"].to_numpy()

        def is_own_label(form: str, row: int) -> bool:
            return row >= 0 and form == written_form(labels[row]) and self.owners_of_form[form] <= set(qids[row])

        return np.array([is_own_label(written_form(text), row) for text, row in zip(texts, top_rows, strict=True)],
                        dtype=bool)

    @functools.cached_property
    def answer_columns(self) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """For "label" and "alias": the texts, their qids joined with "|", and the labels of those
        qids (an alias's entity's; joined with " | " where an alias names entities of several labels),
        as arrays, read from the tables once rather than at every lookup (a text column gives up its
        array slowly)."""
        labels, aliases = self.candidates.labels, self.candidates.aliases
        label_texts = labels["label"].to_numpy(dtype=object)
        label_of = {qid: label for label, qids in zip(label_texts, labels["qids"], strict=True) for qid in qids}
        return {"label": (label_texts, np.array(["|".join(qids) for qids in labels["qids"]], dtype=object),
                          label_texts),
                "alias": (aliases["alias"].to_numpy(dtype=object),
                          np.array(["|".join(qids) for qids in aliases["qids"]], dtype=object),
                          np.array([" | ".join(dict.fromkeys(label_of.get(qid, "") for qid in qids))
                                    for qids in aliases["qids"]], dtype=object))}

    @property
    def data_fingerprint(self) -> str:
        return self.candidates.data_fingerprint

    @property
    def vouches(self) -> bool:
        """Whether the mode has an abstain setting that met its precision target on validation: only
        then can a lookup flag an answer confident."""
        return bool(self.abstain) and bool(self.abstain.get("met_target", True))

    def kept_by_setting(self, read: np.ndarray) -> np.ndarray:
        """Which top answers the abstain setting keeps, from what it reads (``labels_with_confidence``);
        none when it missed its target on validation, since it then vouches for no answer."""
        return confident(read, self.abstain) if self.vouches else np.zeros(len(read), dtype=bool)

    def labels_for(self, aliases, k: int = 10):
        """(scores, label rows) of the k best labels of each alias, best first."""
        return self.searcher.labels_for(aliases, k)

    def labels_with_confidence(self, aliases, k: int = 10):
        """(scores, label rows, abstain scores): what ``labels_for`` gives, and per alias the two
        numbers its abstain setting reads. The reranker's are the probability that the top answer is
        right (and 0, no margin); the other modes' are the top score and the runner-up's."""
        if hasattr(self.searcher, "labels_with_confidence"):
            return self.searcher.labels_with_confidence(aliases, k)
        scores, ids = self.searcher.labels_for(aliases, k)
        return scores, ids, scores[:, :2]

    def aliases_for(self, labels, k: int = 10):
        """(scores, alias rows) of the k best aliases of each label, best first."""
        return self.searcher.aliases_for(labels, k)

    def lookup(self, queries, k: int = 5, reverse: bool = False, min_score: float | None = None,
               batch_size: int = LOOKUP_BATCH) -> pd.DataFrame:
        """Ranked matches for each query, as a table: input_row, query, rank, qid, label (reverse: alias,
        label), score, confidence, confident.

        Forward, an alias finds labels; with ``reverse``, a label finds aliases, each with the label of
        the entity it names, so that another entity's alias shows as one. ``queries`` is one
        string or any sequence of them (a list, a table's column); a missing value (None, NaN) is a
        blank query. ``confidence``, on each query's first row, is what the calibrated abstain setting
        reads: in rerank mode the estimated probability that the top match is right, in the other modes
        its score. A top match is confident when its score clears ``min_score`` when given, else when it
        clears the mode's calibrated setting, if that met its target on validation (alias -> label only,
        the direction it was fitted on); or, alias -> label, when it is the query's own label as
        written, up to case, and no other entity's name reads the same (``exact_label_answers``). Only a
        top match can be: the rows below it are runners-up, so filtering on ``confident`` keeps one
        accepted match a query. A match that is not confident is still reported, flagged, so every query
        has its rows, in input order: k, or as many candidates as it has; a blank query, or one without
        a candidate, gets one row without a match. ``input_row`` says which query a row answers: for a
        table's column (``df["name"]``) its index label, so ``df.join(matches.set_index("input_row"))``
        joins the answers back, else the query's position. ``qid`` joins with ``|`` the ids of every
        entity that carries the label. A query is searched in NFC, without invisible format characters
        (a byte-order mark, a zero-width space) and with its whitespace collapsed; the ``query`` column
        keeps it as given. Each distinct text is searched once, ``batch_size`` of them at a time; on a
        CPU each is computed as it would be alone, so its answers and confidence do not depend on the
        other queries (``alias_label.models.encode.encode_alone``).
        """
        if k < 1:
            raise UserError(f"k={k}: ask for at least one match")
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size}: search at least one query at a time")
        given = query_texts(queries)
        rows_of, queries = input_rows(queries, given), given
        column = "alias" if reverse else "label"
        # Text that reads the same is searched the same way: a name repeated down a column, or written
        # with a decomposed accent or an invisible mark, is searched once and gets the same rows each
        # time. A long column goes in batches, so that the candidates' features of only one batch are
        # held at a time.
        cleaned = [clean_query(query) for query in queries]
        texts = list(dict.fromkeys(text for text in cleaned if text))
        starts = range(0, len(texts), batch_size)
        found = {}
        for start in tqdm(starts, desc="lookup", unit="batch", disable=len(starts) < 2):
            batch = texts[start:start + batch_size]
            found.update(zip(batch, self._matches(batch, k, reverse, min_score, column), strict=True))
        rows = [{"input_row": row, **(match or no_match(query, column)), "query": query}
                for row, query, text in zip(rows_of, queries, cleaned, strict=True)
                for match in (found.get(text) or [None])]
        return lookup_table(rows, LOOKUP_COLUMNS[:4] + answer_names(column) + LOOKUP_COLUMNS[4:])

    def _matches(self, texts: list[str], k: int, reverse: bool, min_score: float | None, column: str) -> list:
        """Each text's ranked matches, as lists of rows (``lookup``'s columns, the query left out)."""
        # The margin to the runner-up needs a second candidate even when one match is asked for.
        if reverse:
            scores, ids = self.aliases_for(texts, max(k, 2))
            read = scores[:, :2]
        else:
            scores, ids, read = self.labels_with_confidence(texts, max(k, 2))
        if min_score is not None:
            is_confident = confident(scores, {"threshold": min_score, "margin": 0.0})
        elif reverse:
            # No setting was fitted label -> alias.
            is_confident = np.zeros(len(texts), dtype=bool)
        else:
            is_confident = self.kept_by_setting(read)
        if not reverse:
            is_confident |= self.exact_label_answers(texts, ids[:, 0])
        names, qids, labels = self.answer_columns[column]

        def texts_of(row: int) -> dict:
            """A label's text; or an alias's, and the label of the entity it names."""
            return {"alias": names[row], "label": labels[row]} if reverse else {"label": names[row]}

        matches = []
        for row_scores, row_ids, top, sure in zip(scores[:, :k], ids[:, :k], read[:, 0], is_confident, strict=True):
            # A search with fewer than k candidates pads with row -1.
            matches.append([{"rank": rank, "qid": qids[row], **texts_of(row),
                             "score": rounded(float(score), 4),
                             "confidence": rounded(float(top), 4) if rank == 1 else None,
                             "confident": bool(sure) and rank == 1}
                            for rank, (score, row) in enumerate(zip(row_scores[row_ids >= 0], row_ids[row_ids >= 0],
                                                                    strict=True), start=1)])
        return matches


def load_retriever(model: str | Path = "teacher", mode: str = "rerank", device: str = "cpu", int8: bool | None = None,
                   int8_scheme: str = "per-channel") -> Retriever:
    """A trained model ready for lookups: ``"teacher"``, ``"student"`` or a model folder.

    ``mode``: ``rerank`` (the reranker over the candidates of every channel; a candidate's score is
    its share of the query's softmaxed reranker scores), ``hybrid`` (the model fused with TF-IDF) or
    ``dense`` (its FAISS index alone), each with its own calibrated abstain setting. ``int8`` runs
    the model's Linear layers in int8 (CPU only), quantised as ``int8_scheme`` says; ``None`` does
    so for the student on a CPU (docs/speed.md).
    The indexes and the calibration are those of the float32 model.
    """
    if mode not in MODES:
        raise UserError(f"mode={mode!r}: choose one of {', '.join(MODES)}")
    if int8_scheme not in INT8_SCHEMES:
        raise UserError(f"int8_scheme={int8_scheme!r}: choose one of {', '.join(INT8_SCHEMES)}")
    dense = load_dense(model, device, int8, int8_scheme, calibrated=mode != "dense")
    retriever = dense if mode == "dense" else as_hybrid(dense) if mode == "hybrid" else as_rerank(dense)
    if not retriever.vouches:
        warn_not_confident(retriever, mode)
    return retriever


def warn_not_confident(retriever: Retriever, mode: str) -> None:
    """Say why lookups in this mode are flagged confident only where the query is its label as
    written, and how to change that."""
    fit = calibration_command(retriever.model_dir)
    if retriever.abstain:
        why = f"abstain setting did not reach {retriever.abstain['target_precision']:.0%} precision on validation"
        fix = f"Refit with a lower target ({fit} --target-precision 0.9), or give validation more aliases"
    else:
        why, fix = "model has no calibrated abstain setting", f"Fit one with: {fit}"
    log.warning("%s: the %s %s, so a lookup is flagged confident only where the query is its label as written. "
                "%s; min_score sets a bar of your own",
                retriever.model_dir, mode, why, fix)


def load_dense(model: str | Path, device: str, int8: bool | None = None, int8_scheme: str = "per-channel",
               calibrated: bool = False) -> Retriever:
    """The model's dense retriever; ``calibrated`` makes a missing or stale calibration an error."""
    device = pick_device(device)
    model_dir = model_folder(model)
    role = require_trained(model_dir).get("role", "teacher")
    label_index, alias_index, candidates = load_bundle_indexes(model_dir, role)
    encoder = load_model(model_dir, device)
    if not (int8 if int8 is not None else int8_by_default(role, device)):
        int8_scheme = None
    if int8_scheme is not None:
        encoder = quantize_int8(encoder, int8_scheme)
    trace_encoder(encoder)
    calibration = load_calibration(model_dir, candidates.data_fingerprint, required=calibrated)
    return Retriever(role, Searcher(role, label_index, alias_index, encoder), candidates,
                     calibration["abstain"]["dense"] if calibration else None, calibration, model_dir, int8_scheme)


def as_hybrid(dense: Retriever, lexical: Searcher | None = None) -> Retriever:
    """The dense retriever fused with TF-IDF at its calibrated weight and exponent, with the hybrid abstain.

    ``lexical`` reuses a TF-IDF searcher already built over the same candidates.
    """
    if dense.calibration is None:
        raise UserError(f"{dense.model_dir} has no valid {CALIBRATION_FILE} for hybrid search. "
                        f"Fit it with: {calibration_command(dense.model_dir)}")
    if "reverse_fusion" not in dense.calibration:
        log.warning("%s has no label -> alias fusion weight, so label -> alias search fuses at the alias -> label "
                    "one. Refit it with: %s", dense.model_dir / CALIBRATION_FILE, calibration_command(dense.model_dir))
    hybrid = hybrid_of(dense.searcher, dense.candidates, dense.calibration, lexical)
    return Retriever(hybrid.name, hybrid, dense.candidates, dense.calibration["abstain"]["hybrid"], dense.calibration,
                     dense.model_dir, dense.int8_scheme)


def as_rerank(dense: Retriever, lexical: Searcher | None = None) -> Retriever:
    """The dense retriever's first stage reranked by its fitted reranker, with the reranked abstain;
    the model's cross-encoder scores too when the reranker was fitted with it, in int8 where the model runs int8.

    Label -> alias lookups stay the hybrid's. ``lexical`` reuses a TF-IDF searcher over the same candidates.
    """
    hybrid = as_hybrid(dense, lexical)
    sidecar, boosters, confidence = load_reranker(dense.model_dir, dense.data_fingerprint,
                                                  calibration_command(dense.model_dir))
    first_stage = FirstStage.build(dense.searcher, dense.candidates, dense.calibration["fusion"],
                                   sidecar["candidates_per_channel"],
                                   hybrid.searcher.lexical)
    cross = None
    if set(sidecar["features"]) & set(CROSS_FEATURES):
        cross = load_cross_encoder(dense.model_dir, dense.candidates.labels["label"].to_numpy(),
                                   str(dense.searcher.model.device), sidecar.get("cross_encoder"), dense.int8_scheme)
    searcher = RerankSearcher(f"{dense.name}_rerank", first_stage, boosters, sidecar["temperature"],
                              sidecar["features"], hybrid.searcher, confidence, cross)
    return Retriever(searcher.name, searcher, dense.candidates, sidecar["abstain"], dense.calibration, dense.model_dir,
                     dense.int8_scheme)


def check_split(retriever: Retriever, split_fingerprint: str) -> None:
    """Fail clearly when a retriever's indexes hold other data than the split it is scored on."""
    if retriever.data_fingerprint != split_fingerprint:
        raise UserError(f"the indexes of {retriever.model_dir} were built for data split {retriever.data_fingerprint}, "
                        f"but the current split is {split_fingerprint}. Rebuild them with: "
                        f"{fix_command(retriever.model_dir, retriever.name.removesuffix('_hybrid'))}")
