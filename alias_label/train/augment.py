"""Synthetic aliases for the teacher's training, generated from labels that have few or none.

Most labels have no alias at all, so the teacher sees them only as in-batch negatives. Each
generator below writes a plausible alias of a label, the way people shorten or re-spell names:

    acronym        initials of the capitalised words   Massachusetts Institute of Technology -> MIT
    generic-drop   the label without its most common   Marmara University -> Marmara
                   words (learned from the labels, so it works for "Inc", "County" or "Hospital" too)
    transliterate  accents folded, other scripts       Batman Üniversitesi -> Batman Universitesi,
                   romanised (unidecode)               Московский ... -> Moskovskii ...
    case-order     lower case, or "A of B" -> "B A"    University of Vienna -> Vienna University

Only labels of entities outside val and test are used, and a generated string that is a held-out
alias or any label is dropped, so evaluation never sees a pair that training generated. A string
generated for many labels (the same initials, say) is dropped too: it names none of them.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from alias_label.data.split import Split
from alias_label.data.table import MAX_ALIAS_ENTITIES
from alias_label.data.text import CONNECTORS, tokens, transliterate

AUGMENTATIONS = ("acronym", "generic-drop", "transliterate", "case-order")
GENERIC_WORDS = 40  # the most frequent label words, by the number of labels they occur in


def generic_words(labels, top: int = GENERIC_WORDS) -> set[str]:
    """The words most labels share ("university", "college", "inc"): they identify no one."""
    frequency = Counter(word for label in labels for word in {t.casefold() for t in tokens(label)})
    return {word for word, _ in frequency.most_common(top)} - CONNECTORS


def acronym(label: str, generic: set[str]) -> str | None:
    words = [t for t in tokens(label) if t.casefold() not in CONNECTORS]
    capitalised = [t for t in words if t[0].isupper() or t[0].isdigit()]
    initials = "".join(t[0] for t in (capitalised if len(capitalised) >= 2 else words)).upper()
    return initials if 2 <= len(initials) <= 8 else None


def generic_drop(label: str, generic: set[str]) -> str | None:
    kept = [t for t in tokens(label) if t.casefold() not in generic and t.casefold() not in CONNECTORS]
    text = " ".join(kept)
    return text if len(text) >= 3 else None


def case_order(label: str, generic: set[str]) -> str | None:
    words = label.split()
    for connector in ("of", "de", "di", "der", "for"):
        if connector in words[1:-1]:
            cut = words.index(connector)
            return " ".join(words[cut + 1:] + words[:cut])
    return label.lower()


GENERATORS = {"acronym": acronym, "generic-drop": generic_drop,
              "transliterate": lambda label, generic: transliterate(label), "case-order": case_order}


def train_side_labels(split: Split) -> pd.DataFrame:
    """The label rows of entities outside val and test: the only ones text may be generated from."""
    held_out_qids = set(split.val["qid"]) | set(split.test["qid"])
    return split.labels[~split.labels["qids"].map(lambda qids: bool(held_out_qids & set(qids)))]


def existing_strings(split: Split) -> set[str]:
    """Every label and alias, case-folded: a generated text equal to one would name it."""
    return set(split.labels["label"].str.casefold()) | set(split.aliases["alias"].str.casefold())


def augmentation_candidates(split: Split, kinds) -> pd.DataFrame:
    """Every generated (qid, label, alias, augmentation) for the labels that may be used."""
    alias_counts = split.train.groupby("label")["alias"].nunique()
    labels = train_side_labels(split)
    # Labels with many real aliases need no made-up ones; most labels have none.
    labels = labels[labels["label"].map(alias_counts).fillna(0) <= 1]
    generic = generic_words(split.labels["label"])
    forbidden = existing_strings(split)
    rows = []
    for label, qids in zip(labels["label"], labels["qids"], strict=True):
        for kind in kinds:
            alias = GENERATORS[kind](label, generic)
            if alias and alias.casefold() not in forbidden:
                rows.append((qids[0], label, alias, kind))
    candidates = pd.DataFrame(rows, columns=["qid", "label", "alias", "augmentation"])
    # "SU" from every "State University": a string made for many labels names none, as in data cleaning.
    labels_named = candidates.groupby(candidates["alias"].str.casefold())["label"].transform("nunique")
    return candidates[labels_named <= MAX_ALIAS_ENTITIES].reset_index(drop=True)


def augmented_pairs(split: Split, kinds, ratio: float, seed: int) -> pd.DataFrame:
    """Up to ``ratio`` x the real train pairs of generated ones, sampled evenly across the kinds."""
    if not kinds or ratio <= 0:
        return pd.DataFrame(columns=["qid", "label", "alias", "augmentation"])
    candidates = augmentation_candidates(split, kinds)
    per_kind = int(ratio * len(split.train)) // len(kinds)
    rng = np.random.default_rng(seed)
    picked = [group.iloc[rng.permutation(len(group))[:per_kind]] for _, group in candidates.groupby("augmentation")]
    return pd.concat(picked, ignore_index=True) if picked else candidates
