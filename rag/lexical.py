"""The one term analyser: text as the full-text index sees it, and as we compare it.

`fts_text` builds the string stored in (and queried against) the full-text
index. LanceDB's full-text tokenizers split on spaces and punctuation, which
leaves Thai and Chinese (no spaces between words) as one giant token per
sentence. We index a derived column instead: Latin, Cyrillic, Devanagari,
Arabic... words stay words; runs of characters from scripts written without
spaces become overlapping character bigrams (plus the single characters of
one-character runs), the standard, dictionary-free way to search CJK and Thai
text. Queries go through the same function, so both sides agree.

Two details that matter for recall:
- A word is a run of letters, digits *and combining marks*. Python's `\\w` does
  not match marks, which cut Hindi words at every vowel sign (हिन्दी -> ह न द).
- Arabic is normalised the usual way for search (diacritics and tatweel dropped,
  alef/yeh/teh-marbuta variants unified), since the same word is written
  several ways in running text.

Terms, two flavours:
- `words`, `content_terms`, `overlap`: fts_text's tokens lower-cased, unstemmed.
  Retrieval's ranking signals (sentence term share, overlap) use these.
- `index_terms`, `content_index_terms`: the tokens the full-text index itself
  stores for a text. The index (rag/store, `create_fts_index("fts",
  base_tokenizer="whitespace", stem=True, language="English",
  remove_stop_words=False, ascii_folding=True)`) runs each whitespace token of
  fts_text through lance's analyser, in this order: drop tokens of
  MAX_TOKEN_BYTES or more UTF-8 bytes, lower-case character by character (no
  final-sigma rule), English Snowball (Porter2) stemming, then ASCII folding
  (a few letters mapped by hand, `ß` -> `ss`, `ø` -> `o`...; any other
  character becomes the ASCII part of its NFKD form, `é` -> `e`, `ﬁ` -> `fi`,
  and stays as it is when that is empty, as for Thai, Hindi or Han). Stemming
  comes first, so `Straße` is stored as `strasse` but `strasse` as `strass`.
  `index_terms` replays that pipeline, with the `snowballstemmer` package for
  the stemmer, so the citation checker matches `studies` to `study` exactly
  when a full-text query would.

Agreement with LanceDB's own `Table.tokenize` is tested (tests/test_lexical.py):
English inflections, accents and ligatures, numbers, hyphenated words, CJK and
Thai bigrams, Hindi, Arabic, Greek, Cyrillic, full-width forms, over-long
tokens, and every Unicode character fts_text keeps as a word character. It
was also checked on Snowball's 42,649-word English test vocabulary (no
difference with snowballstemmer 3.1.1; 3.0.1 differs on 18 words, 2.2.0 on 57:
the index uses the newest Snowball English revision, hence the version floor).
Known limits, none reachable with current versions:
- The stemmer revision must match the one compiled into lance. A future
  lancedb or snowballstemmer release that moves it breaks agreement for the
  few words whose stems changed; the test names them.
- Case and NFKD tables come from Python's unicodedata (Unicode 14 on 3.11),
  lance's from its Rust crates. Characters assigned since are not word
  characters to fts_text, so they never reach the index, but a changed
  mapping of an old character would differ.
"""

from __future__ import annotations

import functools
import re
import threading
import unicodedata

import snowballstemmer

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


def latin_share(text: str) -> float:
    """Share of the letters in `text` that are Latin (ASCII or Latin-1/Extended)."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return 1.0
    return sum(1 for c in letters if c < "\u0250") / len(letters)


# -- terms -------------------------------------------------------------------

# Frequent English function words: they say nothing about whether a passage
# answers a question or supports a claim, so they are not content terms.
STOP_WORDS = frozenset("""a an the of to in on at by for from with about into over as and or not no
is are was were be been being do does did has have had what which who whom whose when where
why how that this these those it its there their they them he she his her we our you your
i me my can could would should will shall may might must than then so if but also any all
some such many much more most other each one two s""".split())

# The index drops tokens of this many UTF-8 bytes or more (lance's max_token_length default).
MAX_TOKEN_BYTES = 40


def words(text: str) -> list[str]:
    """fts_text's tokens, lower-cased, unstemmed: retrieval's term inputs."""
    return fts_text(text).lower().split()


def content_terms(text: str) -> set[str]:
    """`words` minus STOP_WORDS."""
    return {t for t in words(text) if t not in STOP_WORDS}


def overlap(terms: set[str], passage_text: str) -> float:
    """Share of `terms` that occur among the passage's words."""
    if not terms:
        return 0.0
    return len(terms & set(words(passage_text))) / len(terms)


def index_terms(text: str) -> list[str]:
    """The tokens the full-text index stores for `text`, in order (see module doc)."""
    return [t for t in map(_index_token, fts_text(text).split()) if t is not None]


def content_index_terms(text: str) -> set[str]:
    """`index_terms` of the words that are not STOP_WORDS (stop words are tested unstemmed)."""
    return {t for w in fts_text(text).split()
            if w.lower() not in STOP_WORDS and (t := _index_token(w)) is not None}


# Letters without a decomposition that lance's ASCII folding maps by hand.
_FOLD = {"ß": "ss", "ẞ": "SS", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "Ø": "O", "ø": "o",
         "Ł": "L", "ł": "l", "Đ": "D", "Ð": "D", "đ": "d", "ð": "d", "Þ": "TH", "þ": "th",
         "Ħ": "H", "ħ": "h", "Ŧ": "T", "ŧ": "t", "Ŋ": "N", "ŋ": "n", "ı": "i", "ĸ": "k",
         "ſ": "s"}
_local = threading.local()  # snowballstemmer's stemmers keep state while stemming


def _stem(word: str) -> str:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer.stemWord(word)


@functools.lru_cache(maxsize=1 << 16)
def _fold_char(ch: str) -> str:
    if ch in _FOLD:
        return _FOLD[ch]
    out = []
    for part in unicodedata.normalize("NFKD", ch):
        if part.isascii():
            out.append(part)
        elif part in _FOLD:
            out.append(_FOLD[part])
        # anything else (a combining mark, a letter that does not fold) is dropped...
    return "".join(out) or ch  # ...and if nothing is left, the character stays as it is


@functools.lru_cache(maxsize=1 << 16)
def _index_token(token: str) -> str | None:
    """One whitespace token as lance's analyser leaves it (None: dropped as too long)."""
    if len(token.encode()) >= MAX_TOKEN_BYTES:
        return None
    # Character by character, as lance does: str.lower() would apply the final-sigma rule.
    token = token.lower() if token.isascii() else "".join(c.lower() for c in token)
    token = _stem(token)
    return token if token.isascii() else "".join(map(_fold_char, token))
