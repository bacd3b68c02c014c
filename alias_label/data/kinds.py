"""What kind of alias a query is (acronym, same script as its label, other script), for the error breakdown."""

from __future__ import annotations

ALIAS_KINDS = ("acronym", "same_script", "cross_script")


def dominant_script(text: str) -> str:
    """The Unicode script most letters of ``text`` belong to (LATIN, CYRILLIC, CJK, ...)."""
    import unicodedata
    from collections import Counter

    scripts = Counter(unicodedata.name(ch, "UNKNOWN").split()[0] for ch in text if ch.isalpha())
    return scripts.most_common(1)[0][0] if scripts else "NONE"


def alias_kind(alias: str, label: str) -> str:
    """acronym-like (one short token, mostly capitals: MIT, UdeG), else same or different script as the label."""
    letters = [ch for ch in alias if ch.isalpha()]
    capitals = sum(ch.isupper() for ch in letters)
    if " " not in alias.strip() and 2 <= len(letters) <= 10 and capitals >= 2 and capitals * 2 >= len(letters):
        return "acronym"
    return "same_script" if dominant_script(alias) == dominant_script(label) else "cross_script"


def pair_kinds(pairs):
    """The kind of each (alias, label) row of a pairs table, as an array aligned with its rows."""
    import numpy as np

    return np.array([alias_kind(alias, label) for alias, label in zip(pairs["alias"], pairs["label"], strict=True)])
