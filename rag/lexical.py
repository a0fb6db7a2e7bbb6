"""Text as the full-text index sees it.

LanceDB's full-text tokenizers split on spaces and punctuation, which leaves
Thai and Chinese (no spaces between words) as one giant token per sentence.
We index a derived column instead: Latin, Cyrillic, Devanagari, Arabic... words
stay words; runs of characters from scripts written without spaces become
overlapping character bigrams (plus the single characters of one-character runs),
the standard, dictionary-free way to search CJK and Thai text. Queries go
through the same function, so both sides agree.
"""

from __future__ import annotations

import re

# Han, Hiragana, Katakana, Hangul syllables, Thai, Lao, Khmer, Myanmar
_NOSPACE = (r"\u4e00-\u9fff\u3400-\u4dbf\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af"
            r"\u0e00-\u0e7f\u0e80-\u0eff\u1780-\u17ff\u1000-\u109f")
_RUN = re.compile(f"[{_NOSPACE}]+")
_WORD = re.compile(r"\w+", re.UNICODE)
# Thai vowel and tone marks that never start a syllable: dropping them from
# bigrams makes matching robust to mark-order differences.
_THAI_MARKS = re.compile("[\u0e31\u0e34-\u0e3a\u0e47-\u0e4e]")


def _bigrams(run: str) -> list[str]:
    run = _THAI_MARKS.sub("", run)
    if len(run) < 2:
        return [run] if run else []
    return [run[i:i + 2] for i in range(len(run) - 1)]


def fts_text(text: str) -> str:
    """The string stored in (and queried against) the full-text index."""
    out: list[str] = []
    pos = 0
    for match in _RUN.finditer(text):
        out.extend(_WORD.findall(text[pos:match.start()]))
        out.extend(_bigrams(match.group()))
        pos = match.end()
    out.extend(_WORD.findall(text[pos:]))
    return " ".join(out)
