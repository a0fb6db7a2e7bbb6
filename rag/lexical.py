"""Text as the full-text index sees it.

LanceDB's full-text tokenizers split on spaces and punctuation, which leaves
Thai and Chinese (no spaces between words) as one giant token per sentence.
We index a derived column instead: Latin, Cyrillic, Devanagari, Arabic... words
stay words; runs of characters from scripts written without spaces become
overlapping character bigrams (plus the single characters of one-character runs),
the standard, dictionary-free way to search CJK and Thai text. Queries go
through the same function, so both sides agree.

Two details that matter for recall:
- A word is a run of letters, digits *and combining marks*. Python's `\\w` does
  not match marks, which cut Hindi words at every vowel sign (हिन्दी -> ह न द).
- Arabic is normalised the usual way for search (diacritics and tatweel dropped,
  alef/yeh/teh-marbuta variants unified), since the same word is written
  several ways in running text.
"""

from __future__ import annotations

import re
import unicodedata

# Han, Hiragana, Katakana, Hangul syllables, Thai, Lao, Khmer, Myanmar
_NOSPACE = (r"\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
            r"\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f")
_RUN = re.compile(f"[{_NOSPACE}]+")


def _mark_class() -> str:
    """A regex class of every combining mark (categories Mn, Mc, Me) in the BMP."""
    ranges, start, prev = [], None, None
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)).startswith("M"):
            if start is None:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    ranges.append((start, prev))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


_WORD = re.compile(rf"(?:\w|[{_mark_class()}])+", re.UNICODE)
# Thai vowel and tone marks that never start a syllable: dropping them from
# bigrams makes matching robust to mark-order differences.
_THAI_MARKS = re.compile("[\u0e31\u0e34-\u0e3a\u0e47-\u0e4e]")
_ARABIC_DROP = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_ARABIC_MAP = str.maketrans({"\u0623": "\u0627", "\u0625": "\u0627", "\u0622": "\u0627",
                             "\u0671": "\u0627", "\u0649": "\u064a", "\u0629": "\u0647"})
_ARABIC = re.compile("[\u0600-\u06ff]")


def _bigrams(run: str) -> list[str]:
    run = _THAI_MARKS.sub("", run)
    if len(run) < 2:
        return [run] if run else []
    return [run[i:i + 2] for i in range(len(run) - 1)]


def _normalise(text: str) -> str:
    if _ARABIC.search(text):
        text = _ARABIC_DROP.sub("", text).translate(_ARABIC_MAP)
    return text


def fts_text(text: str) -> str:
    """The string stored in (and queried against) the full-text index."""
    text = _normalise(text)
    out: list[str] = []
    pos = 0
    for match in _RUN.finditer(text):
        out.extend(_WORD.findall(text[pos:match.start()]))
        out.extend(_bigrams(match.group()))
        pos = match.end()
    out.extend(_WORD.findall(text[pos:]))
    return " ".join(out)


def nospace_share(text: str) -> float:
    """Share of the letters in `text` that belong to scripts written without spaces."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 0.0
    return sum(1 for c in letters if _RUN.match(c)) / len(letters)


def latin_share(text: str) -> float:
    """Share of the letters in `text` that are Latin (ASCII or Latin-1/Extended)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for c in letters if c < "\u0250") / len(letters)
