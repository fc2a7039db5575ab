"""Other people's text as it shows: what is invisible in it, and whether anything is left."""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # controls and line breaks: become spaces
# invisible characters that are not format characters (Cf, all removed): fillers, blank braille,
# the Mongolian vowel separator, the combining grapheme joiner, Khmer inherent vowels, variation selectors
_INVISIBLE = frozenset("\u034f\u115f\u1160\u17b4\u17b5\u180e\u2800\u3164\uffa0") | frozenset(
    map(chr, range(0xFE00, 0xFE10))
)


def visible(text: str) -> str:
    """``text`` without invisible characters: every format character (Cf: zero-width spaces and
    joiners, direction marks, overrides and isolates, U+061C, tag characters, interlinear
    annotation marks, ...) and the other invisible ones (_INVISIBLE); controls and line breaks
    become spaces, runs of whitespace one space."""
    text = _UNSAFE.sub(" ", text)
    text = "".join(ch for ch in text if ch not in _INVISIBLE and unicodedata.category(ch) != "Cf")
    return " ".join(text.split())


def is_blank(text: str | None) -> bool:
    """Whether someone else's text shows nothing (empty, spaces, invisible characters only)."""
    return not text or not visible(text)
