"""The acronym channel: labels found by the initialisms people write for them.

"Universidad de Guadalajara" is written "UdeG", "UdG" or "UDG"; "Massachusetts Institute of
Technology" is "MIT". Neither the dense model nor character n-grams see that the short form
spells the long one, so this channel indexes, for every label (and its transliteration), the
initialisms of its words in the variants people use: every word's initial, the connector words
("de", "of", ...) left out, or kept whole. Matching ignores case, dots and spaces, so "U.D.G."
and "udg" find the same labels. A query is looked up only when it is short and has no spaces, or
is written in capitals, the shapes of an acronym.

An acronym is often shared (several labels give "MIT"), so every match scores the same and the
channel only proposes candidates: telling them apart is the reranker's job.
"""

from __future__ import annotations

import re

import numpy as np

from alias_label.data.text import CONNECTORS, tokens, transliterate

MIN_LETTERS, MAX_LETTERS = 2, 10
_NOT_LETTER = re.compile(r"[\W_]+", re.UNICODE)


def acronym_key(text: str) -> str:
    """What a written initialism is compared by: its letters and digits, case-folded."""
    return _NOT_LETTER.sub("", text).casefold()


def initialisms(label: str) -> set[str]:
    """The initialisms of a label as people write them, each as its ``acronym_key``.

    From its words: every initial ("UdG"), the connectors left out ("UG"), the connectors kept
    whole ("UdeG"); each from the label and from its transliteration.
    """
    variants = set()
    for text in filter(None, (label, transliterate(label))):
        words = tokens(text)
        if len(words) < 2:
            continue
        content = [w for w in words if w.casefold() not in CONNECTORS]
        variants |= {"".join(w[0] for w in words), "".join(w[0] for w in content),
                     "".join(w if w.casefold() in CONNECTORS else w[0] for w in words)}
    keys = {acronym_key(v) for v in variants}
    return {key for key in keys if MIN_LETTERS <= len(key) <= MAX_LETTERS}


def looks_like_acronym(query: str) -> bool:
    """Short with no spaces ("UdeG", "U.D.G."), or every letter a capital ("MIT", "UNAM MX")."""
    letters = [ch for ch in query if ch.isalpha()]
    if not MIN_LETTERS <= len(acronym_key(query)) <= MAX_LETTERS or not letters:
        return False
    return " " not in query.strip() or all(ch.isupper() for ch in letters)


class AcronymIndex:
    """Initialism -> label rows; ``search`` has the shape of a FAISS search over label rows."""

    def __init__(self, labels, label_initialisms: list[set[str]] | None = None):
        """``label_initialisms``: each label's ``initialisms``, when the caller has computed them already."""
        labels = list(labels)
        if label_initialisms is None:
            label_initialisms = [initialisms(label) for label in labels]
        self.rows_of: dict[str, list[int]] = {}
        for row, keys in enumerate(label_initialisms):
            for key in sorted(keys):
                self.rows_of.setdefault(key, []).append(row)
        self.ntotal = len(labels)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, label rows), -1 padded: 1.0 for every label one of whose initialisms the query is."""
        queries = list(queries)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            if not looks_like_acronym(query):
                continue
            transliterated = transliterate(query) or query
            rows = list(dict.fromkeys(self.rows_of.get(acronym_key(query), [])
                                      + self.rows_of.get(acronym_key(transliterated), [])))[:k]
            ids[i, :len(rows)] = rows
            scores[i, :len(rows)] = 1.0
        return scores, ids
