"""The acronym channel: labels found by the initialisms people write for them.

"Universidad de Guadalajara" is written "UdeG", "UdG" or "UDG"; "Massachusetts Institute of
Technology" is "MIT". Neither the dense model nor character n-grams see that the short form
spells the long one, so this channel indexes, for every label (and its transliteration), the
initialisms of its words in the variants people use: every word's initial, the connector words
("de", "of", ...) left out, or kept whole, with hyphenated words read whole or part by part
("Fürst-Johann-Moritz Gymnasium": FG or FJMG). Matching ignores case, dots and spaces, so "U.D.G."
and "udg" find the same labels. A query is looked up only when it is short and has no spaces, or
is written in capitals, the shapes of an acronym.

A name's last word is often a place or a legal form that its acronym leaves out ("Benue State
University Makurdi" is BSU, "Overseas Family School Singapore" OFS), so the initialisms of a name
without its last word are indexed too, as weaker matches, where two or more words remain.

An acronym is often shared (several labels give "MIT"), so every match of a kind scores the same
and the channel only proposes candidates: telling them apart is the reranker's job.
"""

from __future__ import annotations

import re

import numpy as np

from alias_label.data.text import CONNECTORS, tokens, transliterate

MIN_LETTERS, MAX_LETTERS = 2, 10
PREFIX_SCORE = 0.5  # the channel's score of a match by a name's initialisms without its last word
PREFIX_MIN_LETTERS = 3
_NOT_LETTER = re.compile(r"[\W_]+", re.UNICODE)


def acronym_key(text: str) -> str:
    """What a written initialism is compared by: its letters and digits, case-folded."""
    return _NOT_LETTER.sub("", text).casefold()


def _word_lists(label: str) -> list[list[str]]:
    """The words of a label and of its transliteration, hyphenated words whole and split."""
    lists = []
    for text in filter(None, (label, transliterate(label))):
        words = tokens(text)
        lists += [words, [part for word in words for part in word.split("-") if part]]
    return lists


def _variants(words: list[str]) -> set[str]:
    """Every initial ("UdG"), the connectors left out ("UG"), the connectors kept whole ("UdeG")."""
    if len(words) < 2:
        return set()
    content = [w for w in words if w.casefold() not in CONNECTORS]
    return {"".join(w[0] for w in words), "".join(w[0] for w in content),
            "".join(w if w.casefold() in CONNECTORS else w[0] for w in words)}


def _keys(variants: set[str]) -> set[str]:
    keys = {acronym_key(v) for v in variants}
    return {key for key in keys if MIN_LETTERS <= len(key) <= MAX_LETTERS}


def _without_last_word(words: list[str]) -> list[str]:
    """The words before the last content word, connectors at the end dropped too; none unless at
    least two content words stay."""
    kept = list(words)
    while kept and kept[-1].casefold() in CONNECTORS:
        kept.pop()
    kept = kept[:-1]
    while kept and kept[-1].casefold() in CONNECTORS:
        kept.pop()
    return kept if sum(w.casefold() not in CONNECTORS for w in kept) >= 2 else []


def label_initialisms(label: str) -> tuple[set[str], set[str]]:
    """A label's ``initialisms`` and ``prefix_initialisms``, from one reading of its words."""
    word_lists = _word_lists(label)
    full = _keys(set().union(*(_variants(words) for words in word_lists)))
    prefix = _keys(set().union(*(_variants(_without_last_word(words)) for words in word_lists)))
    return full, {key for key in prefix if len(key) >= PREFIX_MIN_LETTERS} - full


def initialisms(label: str) -> set[str]:
    """The initialisms of a label as people write them, each as its ``acronym_key``: the variants
    of ``_variants`` from its words, from its hyphenated words split, and from its transliteration."""
    return label_initialisms(label)[0]


def prefix_initialisms(label: str) -> set[str]:
    """The initialisms of a name without its last word, of three letters or more, less its own
    ``initialisms``: "Benue State University Makurdi" gives "bsu"; two-letter ones would match
    almost anything."""
    return label_initialisms(label)[1]


def looks_like_acronym(query: str) -> bool:
    """Short with no spaces ("UdeG", "U.D.G."), or every letter a capital ("MIT", "UNAM MX")."""
    letters = [ch for ch in query if ch.isalpha()]
    if not MIN_LETTERS <= len(acronym_key(query)) <= MAX_LETTERS or not letters:
        return False
    return " " not in query.strip() or all(ch.isupper() for ch in letters)


def _rows_of(label_keys: list[set[str]]) -> dict[str, list[int]]:
    rows_of: dict[str, list[int]] = {}
    for row, keys in enumerate(label_keys):
        for key in sorted(keys):
            rows_of.setdefault(key, []).append(row)
    return rows_of


class AcronymIndex:
    """Initialism -> label rows; ``search`` has the shape of a FAISS search over label rows."""

    def __init__(self, labels, keys: list[tuple[set[str], set[str]]] | None = None):
        """``keys``: each label's ``label_initialisms``, when the caller has computed them already."""
        labels = list(labels)
        if keys is None:
            keys = [label_initialisms(label) for label in labels]
        self.rows_of = _rows_of([full for full, _ in keys])
        self.prefix_rows_of = _rows_of([prefix for _, prefix in keys])
        self.ntotal = len(labels)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, label rows), -1 padded: 1.0 for every label one of whose initialisms the query is,
        then ``PREFIX_SCORE`` for those it is a prefix initialism of."""
        queries = list(queries)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            if not looks_like_acronym(query):
                continue
            keys = list(dict.fromkeys([acronym_key(query), acronym_key(transliterate(query) or query)]))
            full = dict.fromkeys(row for key in keys for row in self.rows_of.get(key, []))
            prefix = dict.fromkeys(row for key in keys for row in self.prefix_rows_of.get(key, []) if row not in full)
            rows = [*full, *prefix][:k]
            ids[i, :len(rows)] = rows
            scores[i, :len(rows)] = [1.0 if row in full else PREFIX_SCORE for row in rows]
        return scores, ids
