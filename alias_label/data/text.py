"""Text helpers every stage shares: whitespace, word tokens, connector words, transliteration."""

from __future__ import annotations

import functools
import re

_WHITESPACE = re.compile(r"\s+")


def normalise_space(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


# Format characters (Unicode category Cf) do not show: a byte-order mark left at the start of a file's
# first cell, a zero-width space or a direction mark pasted from a web page, a soft hyphen. The joiners
# stay: ZWNJ and ZWJ change how Persian, Indic and emoji text is written.
KEPT_FORMAT = frozenset("\u200c\u200d")


def is_invisible(ch: str) -> bool:
    import unicodedata

    return ch not in KEPT_FORMAT and unicodedata.category(ch) == "Cf"


def has_invisible_marks(text: str) -> bool:
    return not text.isascii() and any(is_invisible(ch) for ch in text)


def is_nfc(text: str) -> bool:
    import unicodedata

    return text.isascii() or unicodedata.is_normalized("NFC", text)


def clean_query(text: str) -> str:
    """``text`` as a lookup reads it: in NFC, so a decomposed "é" (e and a combining accent) is the
    composed one, without invisible format characters, its whitespace collapsed and stripped. Text
    that reads the same gets the same answer."""
    if text.isascii():
        return normalise_space(text)
    import unicodedata

    visible = "".join(ch for ch in text if not is_invisible(ch))
    return normalise_space(unicodedata.normalize("NFC", visible))


CONNECTORS = {"of", "de", "di", "der", "des", "du", "da", "do", "del", "for", "für", "the", "and", "y", "e", "et",
              "und", "la", "le", "w", "im", "in", "at"}


_TOKEN = re.compile(r"[^\W_]+(?:[-'.][^\W_]+)*", re.UNICODE)


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(text)


# Folding and transliteration are pure and see the same words again and again (every label's words
# when a reranker loads, each several times): a bounded cache answers the repeats.
TEXT_CACHE = 1 << 16


@functools.lru_cache(maxsize=TEXT_CACHE)
def fold(text: str) -> str:
    """``text`` case-folded with its accents removed: "Mário" and "mario" fold alike, "Мир" stays Cyrillic."""
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", normalise_space(text))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


_NOT_ALPHANUMERIC = re.compile(r"[\W_]+")


def match_key(text: str) -> str:
    """``text`` folded and stripped of all but letters and digits: the names "University of X - Y" and
    "University Of X-Y" share a key, which a reader would not tell apart."""
    return _NOT_ALPHANUMERIC.sub("", fold(text))


@functools.lru_cache(maxsize=TEXT_CACHE)
def transliterate(text: str) -> str | None:
    """``text`` in ASCII (accents folded, other scripts romanised by unidecode); None when that changes nothing."""
    from unidecode import unidecode

    folded = " ".join(unidecode(text).split())
    return folded if folded and folded != text else None
