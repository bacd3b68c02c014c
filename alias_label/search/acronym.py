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

Many acronyms take more than an initial from some words: "ESPOL" is Escuela Superior
POLitécnica del Litoral, "NORSU" Negros ORiental State University. For a query of four letters
or more, the channel also proposes, as weaker matches still, the labels whose words' starts spell
it in order: its first letter the initial of the label's first content word, each next letter
either the next letter of the same word or the initial of a later word. Such a match scores by
the share of the label's content words it starts from, so a reading that uses every word ranks
first. An elided article or preposition ("l'", "dell'") is read without its elision, as people
write the acronym: "École Marocaine des Sciences de l'Ingénieur" is EMSI.

An acronym is often shared (several labels give "MIT"), so every match of a kind scores the same
and the channel only proposes candidates: telling them apart is the reranker's job.
"""

from __future__ import annotations

import functools
import re

import numpy as np

from alias_label.data.text import CONNECTORS, fold, tokens, transliterate

MIN_LETTERS, MAX_LETTERS = 2, 10
PREFIX_SCORE = 0.5  # the channel's score of a match by a name's initialisms without its last word
PREFIX_MIN_LETTERS = 3
# The score of a label whose words' starts spell the query, times the share of its content words
# they use; four letters or more, as three-letter keys align with the words of too many names.
ALIGNED_SCORE = 0.25
ALIGNED_MIN_LETTERS = 4
# Articles and prepositions that French, Italian and Catalan elide before a vowel: "l'Ingénieur".
ELISIONS = {"l", "d", "dell", "all", "dall", "nell", "sull", "qu"}
_NOT_LETTER = re.compile(r"[\W_]+", re.UNICODE)


def acronym_key(text: str) -> str:
    """What a written initialism is compared by: its letters and digits, case-folded."""
    return _NOT_LETTER.sub("", text).casefold()


def without_elisions(words: list[str]) -> list[str]:
    """The words with elided articles and prepositions dropped: "l'Ingénieur" reads "Ingénieur"."""
    kept = []
    for word in words:
        head, apostrophe, rest = word.partition("'")
        if apostrophe and head.casefold() in ELISIONS and rest:
            kept.append(rest)
        elif word.casefold() not in ELISIONS:
            kept.append(word)
    return kept


def _word_lists(label: str) -> list[list[str]]:
    """The words of a label and of its transliteration, hyphenated words whole and split, and
    without elisions."""
    lists = []
    for text in filter(None, (label, transliterate(label))):
        words = tokens(text)
        lists += [words, [part for word in words for part in word.split("-") if part], without_elisions(words)]
    return lists


def word_readings(label: str) -> list[list[str]]:
    """The ways a label's words can be spelled from, for aligning an acronym: its words and its
    transliteration's, folded, hyphenated words split, elisions dropped, from the first content
    word on."""
    lists = []
    for text in filter(None, (label, transliterate(label))):
        words = [part for word in without_elisions(tokens(fold(text))) for part in re.split(r"[-'.]", word) if part]
        while words and words[0] in CONNECTORS:
            words = words[1:]
        if words and words not in lists:
            lists.append(words)
    return lists


def anchors(key: str, words: list[str]) -> int:
    """The most words the letters of ``key`` can be read from, in order: its first letter the first
    word's initial, each next one the next letter of the same word or a later word's initial.
    0 when no such reading spells all of ``key``."""
    @functools.cache
    def best(i: int, w: int, c: int) -> float:  # the most anchors for key[i:], word w read up to letter c
        if i == len(key):
            return 0
        found = best(i + 1, w, c + 1) if c < len(words[w]) and words[w][c] == key[i] else -np.inf
        for later in range(w + 1, len(words)):
            if words[later][0] == key[i]:
                found = max(found, 1 + best(i + 1, later, 1))
        return found

    if not key or not words or words[0][0] != key[0]:
        return 0
    rest = best(1, 0, 1)
    return int(1 + rest) if rest > -np.inf else 0


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


def _aligned_pattern(key: str) -> re.Pattern:
    """A line of words, from its start, whose words' starts spell ``key`` (``anchors`` reads it)."""
    steps = "".join(f"(?:{re.escape(ch)}|[^ \\n]* (?:[^ \\n]+ )*?{re.escape(ch)})" for ch in key[1:])
    return re.compile(f"^{re.escape(key[0])}{steps}", re.MULTILINE)


class AlignedLines:
    """Every label's readings of two words or more as lines of text, one block per first letter, for
    ``_aligned_pattern`` (a one-word label spelled by a query is one its start matches: TF-IDF's)."""

    def __init__(self, label_readings: list[list[list[str]]]):
        by_letter: dict[str, list[tuple[int, list[str]]]] = {}
        for row, label_lists in enumerate(label_readings):
            for words in (words for words in label_lists if len(words) >= 2):
                by_letter.setdefault(words[0][0], []).append((row, words))
        self.blocks = {}
        for letter, lines in by_letter.items():
            texts = [" ".join(words) for _, words in lines]
            starts = np.cumsum([0] + [len(text) + 1 for text in texts])[:-1]
            self.blocks[letter] = ("\n".join(texts) + "\n", starts, lines)

    def search(self, key: str) -> dict[int, float]:
        """Label row -> the share of its content words a reading of ``key`` starts from, in the order
        the lines match (``AcronymIndex.search`` ranks them across the query's keys)."""
        if key[:1] not in self.blocks:
            return {}
        text, starts, lines = self.blocks[key[0]]
        shares: dict[int, float] = {}
        for match in _aligned_pattern(key).finditer(text):
            row, words = lines[int(np.searchsorted(starts, match.start(), side="right")) - 1]
            content = sum(word not in CONNECTORS for word in words)
            shares[row] = max(shares.get(row, 0.0), min(anchors(key, words) / max(content, 1), 1.0))
        return shares


class AcronymIndex:
    """Initialism -> label rows; ``search`` has the shape of a FAISS search over label rows."""

    def __init__(self, labels, keys: list[tuple[set[str], set[str]]] | None = None,
                 label_readings: list[list[list[str]]] | None = None, aligned: bool = True):
        """``keys``: each label's ``label_initialisms``, ``label_readings`` its ``word_readings``, when the
        caller has computed them already; ``aligned=False`` leaves out the readings from the starts of
        words, for measuring what they add."""
        labels = list(labels)
        if keys is None:
            keys = [label_initialisms(label) for label in labels]
        self.rows_of = _rows_of([full for full, _ in keys])
        self.prefix_rows_of = _rows_of([prefix for _, prefix in keys])
        self.aligned = (AlignedLines(label_readings if label_readings is not None else map(word_readings, labels))
                        if aligned else None)
        self.ntotal = len(labels)

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, label rows), -1 padded: 1.0 for every label one of whose initialisms the query is,
        then ``PREFIX_SCORE`` for those it is a prefix initialism of, then, for a query of
        ``ALIGNED_MIN_LETTERS`` or more, up to ``ALIGNED_SCORE`` for those whose words' starts spell it."""
        queries = list(queries)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        for i, query in enumerate(queries):
            if not looks_like_acronym(query):
                continue
            keys = list(dict.fromkeys([acronym_key(query), acronym_key(transliterate(query) or query)]))
            found = dict.fromkeys((row for key in keys for row in self.rows_of.get(key, [])), 1.0)
            for row in (row for key in keys for row in self.prefix_rows_of.get(key, [])):
                found.setdefault(row, PREFIX_SCORE)
            if len(found) < k and self.aligned is not None:
                aligned = [(row, share) for key in keys if len(key) >= ALIGNED_MIN_LETTERS
                           for row, share in self.aligned.search(key).items() if row not in found]
                for row, share in sorted(aligned, key=lambda item: -item[1]):
                    found.setdefault(row, ALIGNED_SCORE * share)
            rows = list(found)[:k]
            ids[i, :len(rows)] = rows
            scores[i, :len(rows)] = [found[row] for row in rows]
        return scores, ids
