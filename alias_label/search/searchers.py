"""Searchers: texts in, (scores, row ids) out, over a model's dense indexes or TF-IDF.

Every search mode (dense, lexical, hybrid) has the same two methods, ``labels_for`` (alias ->
label rows) and ``aliases_for`` (label -> alias rows), so the evaluator, the lookup table and
calibration treat them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alias_label.data.split import Split
from alias_label.data.text import transliterate
from alias_label.index.dense import KeyedIndex, build_index, search_alone
from alias_label.index.tables import Candidates, build_label_index, keyed_texts
from alias_label.models.encode import encode_alone
from alias_label.search.hybrid import HybridSearcher
from alias_label.search.lexical import TfidfIndex


@dataclass
class Searcher:
    """Search in both directions, dense or lexical: texts in, (scores, row ids) out.

    alias -> label ranks the rows of the label table; label -> alias ranks the rows of the alias table.
    """

    name: str
    # A DenseIndex (embeddings in) or a TfidfIndex (text in): both search(queries, k), k capped at their size.
    label_index: object
    alias_index: object
    model: object = None  # None for the lexical searcher, whose indexes take raw text

    def _search(self, index, texts, kind: str, k: int):
        """A dense searcher's queries are encoded and searched as each would be alone
        (``encode_alone``, ``search_alone``), so that a query's answers never depend on the others."""
        if self.model is None:
            return index.search(list(texts), k)
        return search_alone(index, encode_alone(self.model, texts, kind=kind), k)

    def labels_for(self, aliases, k: int = 10):
        return self._search(self.label_index, aliases, "query", k)

    def aliases_for(self, labels, k: int = 10):
        return self._search(self.alias_index, labels, "document", k)


@dataclass
class LexicalSearcher(Searcher):
    """TF-IDF both ways. label -> alias compares both sides transliterated: the alias index holds each
    alias's transliteration as another key and the label is transliterated, so a Latin label reaches
    an alias written in Cyrillic and a Cyrillic label one written in Latin letters."""

    def aliases_for(self, labels, k: int = 10):
        return self.alias_index.search([transliterate(label) or label for label in labels], k)


@dataclass
class TransliteratedQueries:
    """A searcher whose alias queries are transliterated first: a Cyrillic or CJK alias shares no
    character n-gram with a Latin label, but its romanisation may (label -> alias is the searcher's own)."""

    searcher: object

    def labels_for(self, aliases, k: int = 10):
        return self.searcher.labels_for([transliterate(alias) or alias for alias in aliases], k)

    def aliases_for(self, labels, k: int = 10):
        return self.searcher.aliases_for(labels, k)


def keyed_tfidf(texts, rows: np.ndarray | None):
    """TF-IDF over ``texts``; with ``rows``, a KeyedIndex that ranks each row at its best text."""
    return TfidfIndex(texts) if rows is None else KeyedIndex(TfidfIndex(texts), rows)


def lexical_searcher(candidates: Candidates) -> LexicalSearcher:
    """TF-IDF over the label keys of ``candidates`` and over the aliases and their transliterations:
    the baseline, and a hybrid's lexical side."""
    return LexicalSearcher("tfidf", keyed_tfidf(candidates.key_texts, candidates.key_rows),
                           keyed_tfidf(*keyed_texts(candidates.aliases["alias"])))


def keys_of(searcher: Searcher) -> str:
    """The label keys a dense searcher's index was built with; its hybrid's lexical side uses the same."""
    return "transliterated" if isinstance(searcher.label_index, KeyedIndex) else "label"


def dense_searcher(name: str, model, split: Split, embeddings: dict[str, np.ndarray],
                   keys: str = "transliterated") -> Searcher:
    """A searcher over in-memory indexes of ``model``'s candidate embeddings (``encode_candidates``),
    e.g. for an untrained base model, which has no index files."""
    return Searcher(name, build_label_index(embeddings, split, keys), build_index(embeddings["aliases"]), model)


def hybrid_of(dense: Searcher, candidates: Candidates, calibration: dict,
              lexical: Searcher | None = None) -> HybridSearcher:
    """A trained model's searcher fused with TF-IDF at its calibrated weights and exponents, one pair
    for each direction (a calibration without the label -> alias pair uses the other for both)."""
    fusion, reverse = calibration["fusion"], calibration.get("reverse_fusion")
    return HybridSearcher(f"{dense.name}_hybrid", dense, lexical or lexical_searcher(candidates), fusion["weight"],
                          fusion["depth"], fusion["exponent"],
                          None if reverse is None else (reverse["weight"], reverse["exponent"]))
