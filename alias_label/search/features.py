"""Features of an (alias, candidate label) pair, for the reranker.

Every rule is about strings, scripts and scores, not about any kind of entity, so the same
features serve institutions, companies or places:

    channels    each first-stage channel's score and rank of the candidate (NaN: not proposed)
    cosine      the model's exact cosine of alias and label, the exact TF-IDF cosine (each at the
                label's closer key), and the hybrid's fused score of the two
    fuzzy       rapidfuzz ratio, token-set and partial ratio on the folded strings, and again on
                both sides transliterated
    overlap     IDF-weighted share of the alias's words in the label, and of the label's in the alias
    acronym     whether the alias is one of the label's initialisms, and how many of its letters
                align, in order, with the starts of the label's words
    shape       same script, length ratio, the alias equal to this label or to any label
    site        the alias against the name of the entity's website (``mit`` in mit.edu)
    query       the alias's length, word count and acronym shape, and how many labels its
                acronym spells (an acronym shared by many labels is weak evidence)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from alias_label.data.kinds import dominant_script
from alias_label.data.text import fold, tokens, transliterate
from alias_label.search.acronym import acronym_key, label_initialisms, looks_like_acronym, word_readings

CHANNELS = ("dense", "tfidf", "tfidf_query_translit", "acronym")
GROUPS = {
    "channels": [f"{kind}_{channel}" for channel in CHANNELS for kind in ("score", "rank")],
    "cosine": ["cosine", "tfidf_cosine", "tfidf_cosine_translit", "fused"],
    "fuzzy": ["ratio", "token_set", "partial", "ratio_translit", "token_set_translit", "partial_translit"],
    "overlap": ["idf_overlap_alias", "idf_overlap_label"],
    "acronym": ["is_initialism", "initials_aligned"],
    "shape": ["same_script", "length_ratio", "alias_is_this_label", "alias_is_a_label"],
    "site": ["site_is_alias", "site_ratio"],
    "query": ["alias_length", "alias_words", "alias_looks_like_acronym", "acronym_labels"],
}
FEATURES = [name for group in GROUPS.values() for name in group]
COLUMN = {name: i for i, name in enumerate(FEATURES)}
SITE_PREFIXES = {"www", "web", "en", "portal"}


def site_name(website: str) -> str:
    """The name part of a web address: ``mit`` for https://www.mit.edu/about."""
    host = website.split("://")[-1].split("/")[0].casefold()
    parts = [part for part in host.split(".") if part and part not in SITE_PREFIXES]
    return parts[0] if parts else ""


def aligned_initials(short: str, words: list[str]) -> float:
    """Share of the short form's letters matched, in order, to the starts of the long form's words,
    each word giving its initial and then, optionally, the letters right after it ("UdeG"), read
    greedily left to right."""
    letters = acronym_key(short)
    if not letters or not words:
        return 0.0
    matched, w = 0, 0
    i = 0
    while i < len(letters) and w < len(words):
        word = words[w].casefold()
        if letters[i] == word[0]:
            matched, i, j = matched + 1, i + 1, 1
            while i < len(letters) and j < len(word) and letters[i] == word[j] and (
                    w + 1 >= len(words) or letters[i] != words[w + 1].casefold()[0]):
                matched, i, j = matched + 1, i + 1, j + 1
        w += 1
    return matched / len(letters)


@dataclass
class LabelTable:
    """What the features need of every label, computed once when a reranker is loaded."""

    folded: list[str]
    transliterated: list[str]
    readings: list[list[list[str]]]  # each label's ``word_readings``, for the acronym alignment
    word_sets: list[set[str]]
    scripts: list[str]
    initialisms: list[set[str]]
    prefix_initialisms: list[set[str]]  # not a feature: kept for the acronym channel's index
    sites: list[set[str]]
    idf: dict[str, float]
    idf_totals: list[float]  # each label's summed word IDF, the denominator of its overlap
    labels_of_initialism: Counter
    folded_labels: set[str]

    @classmethod
    def build(cls, labels, websites) -> LabelTable:
        labels = list(labels)
        folded = [fold(label) for label in labels]
        words = [tokens(label) for label in labels]
        word_sets = [{fold(word) for word in label_words} for label_words in words]
        document_frequency = Counter(word for word_set in word_sets for word in word_set)
        idf = {word: math.log(len(labels) / count) + 1.0 for word, count in document_frequency.items()}
        keys = [label_initialisms(label) for label in labels]
        full = [label_keys for label_keys, _ in keys]
        return cls(folded, [fold(transliterate(label) or label) for label in labels],
                   [word_readings(label) for label in labels], word_sets,
                   [dominant_script(label) for label in labels], full, [prefix for _, prefix in keys],
                   [{site_name(site) for site in sites} - {""} for sites in websites], idf,
                   [sum(idf[word] for word in word_set) for word_set in word_sets],
                   Counter(key for label_keys in full for key in label_keys), set(folded))

    def weight(self, words) -> float:
        """The summed IDF of ``words``; a word no label has weighs 1."""
        return sum(self.idf.get(word, 1.0) for word in words)


def pair_features(alias: str, rows: np.ndarray, cosines: dict[str, np.ndarray], channel_scores: dict,
                  channel_ranks: dict, table: LabelTable) -> np.ndarray:
    """The feature matrix (candidates x FEATURES) of one alias against its candidate label rows.

    ``cosines`` holds the exact ``cosine``, ``tfidf_cosine``, ``tfidf_cosine_translit`` and ``fused``
    scores of each candidate.
    """
    from rapidfuzz import fuzz, process

    folded, translit = fold(alias), fold(transliterate(alias) or alias)
    alias_words = {fold(word) for word in tokens(alias)}
    alias_weight = table.weight(alias_words)
    key, script, acronym_shape = acronym_key(alias), dominant_script(alias), looks_like_acronym(alias)
    out = np.full((len(rows), len(FEATURES)), np.nan, dtype=np.float32)
    for channel in CHANNELS:
        out[:, COLUMN[f"score_{channel}"]] = channel_scores[channel]
        ranks = channel_ranks[channel].astype(np.float32)
        out[:, COLUMN[f"rank_{channel}"]] = np.where(ranks > 0, ranks, np.nan)
    for name in GROUPS["cosine"]:
        out[:, COLUMN[name]] = cosines[name]
    for name, scorer in (("ratio", fuzz.ratio), ("token_set", fuzz.token_set_ratio), ("partial", fuzz.partial_ratio)):
        out[:, COLUMN[name]] = process.cdist([folded], [table.folded[r] for r in rows], scorer=scorer)[0] / 100
        out[:, COLUMN[f"{name}_translit"]] = process.cdist([translit], [table.transliterated[r] for r in rows],
                                                           scorer=scorer)[0] / 100
    # One list per column, over the candidates, then one assignment each: cheaper than per-cell writes.
    shared = np.array([table.weight(alias_words & table.word_sets[row]) for row in rows], dtype=np.float64)
    label_weight = np.array([table.idf_totals[row] for row in rows], dtype=np.float64)
    # IDF-weighted overlap, both ways: the shared words' weight over the alias's and over the label's.
    out[:, COLUMN["idf_overlap_alias"]] = shared / alias_weight if alias_weight else 0.0
    out[:, COLUMN["idf_overlap_label"]] = np.divide(shared, label_weight, out=np.zeros_like(shared),
                                                    where=label_weight > 0)
    out[:, COLUMN["is_initialism"]] = [key in table.initialisms[row] for row in rows]
    if acronym_shape:
        keys = {key, acronym_key(transliterate(alias) or alias)}
        out[:, COLUMN["initials_aligned"]] = [max((aligned_initials(k, words) for k in keys
                                                   for words in table.readings[row]), default=0.0) for row in rows]
    else:
        out[:, COLUMN["initials_aligned"]] = 0.0
    out[:, COLUMN["same_script"]] = [script == table.scripts[row] for row in rows]
    out[:, COLUMN["length_ratio"]] = [len(folded) / max(len(table.folded[row]), 1) for row in rows]
    out[:, COLUMN["alias_is_this_label"]] = [folded == table.folded[row] for row in rows]
    out[:, COLUMN["site_is_alias"]] = [key in table.sites[row] for row in rows]
    out[:, COLUMN["site_ratio"]] = [max((fuzz.ratio(key, site) / 100 for site in table.sites[row]), default=np.nan)
                                    for row in rows]
    out[:, COLUMN["alias_is_a_label"]] = folded in table.folded_labels
    out[:, COLUMN["alias_length"]] = len(alias)
    out[:, COLUMN["alias_words"]] = len(alias_words)
    out[:, COLUMN["alias_looks_like_acronym"]] = acronym_shape
    out[:, COLUMN["acronym_labels"]] = table.labels_of_initialism.get(key, 0) if acronym_shape else 0
    return out
