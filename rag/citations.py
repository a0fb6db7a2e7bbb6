"""Answer text with [n] markers -> checked citations.

1. Markers: `[1]`, `[1, 2]`, `[1-3]` and `[1][2]` are read; numbers that name
   no source are dropped, and the text shown is rewritten with the valid ones
   only, one number per bracket (`[1][2]`), so every marker left is clickable.
2. The text is split into sentences (see split_sentences); a marker belongs to
   the sentence it ends (after the full stop, `... 1932. [1]`, or before it,
   `... 1932 [1].`).
3. Each cited sentence is checked against its passage. Two signals:
   lexical recall (the share of the sentence's content terms found in the
   passage, as the full-text index analyses them: lower-cased, ASCII-folded,
   Snowball-stemmed, so `studies` matches `study` exactly when a full-text
   query would; see rag.lexical.content_index_terms) and the embedding
   cosine between the sentence and the passage's best-matching span. Their
   mean must reach SUPPORT_THRESHOLD, and every number in the sentence must
   occur in the passage: a wrong year is the commonest unfaithful claim, and
   neither signal above sees it.
4. The best-matching span (one passage sentence or two adjacent ones, by
   Dice overlap of content words) is returned as character offsets into the
   passage text, for highlighting.

Inferred citations: small models often answer from a source without citing it.
A sentence without a marker that one source supports strongly (lexical recall
of INFER_MIN_LEXICAL or more, and the same support test) gets a citation with
`inferred=True`. The answer text is left unchanged: an inferred citation is the
checker's claim, not the model's, and the UI shows it as such.

Sentence support (`sentence_support`): a sentence of the answer is supported
when at least one of its citations (cited or inferred) is; a sentence with no
citation, or only failed ones, is not, and front ends mark it as such.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from rag.lexical import content_index_terms
from rag.text import sentence_spans, trim
from rag.types import Passage

SUPPORT_THRESHOLD = 0.5  # mean of lexical recall and cosine
INFER_MIN_LEXICAL = 0.75  # stricter than for cited sentences: the model made no claim
MIN_INFER_TERMS = 3  # shorter unmarked sentences ("Yes.") get no inferred citation
MAX_RANGE = 20  # [1-500] is a typo, not 500 citations

# A marker as models write it: [1], [1, 2], [1-3], [Source 2]; group 1 holds the numbers.
MARKER = re.compile(r"\[\s*(?:sources?\s*)?(\d+(?:\s*[,;\-\u2013]\s*(?:sources?\s*)?\d+)*)\s*\]",
                    re.IGNORECASE)
_CLEAN_MARKER = re.compile(r"\[(\d+)\]")
_LINE = re.compile(r"[^\n]+")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_LIST_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_ITEM_PREFIX = re.compile(_LIST_ITEM.pattern[1:])  # the same, matched from a line's start


@dataclass(frozen=True)
class Citation:
    marker: int  # the source number, [n]
    passage: int  # index into the answer's sources (marker - 1)
    doc_id: str
    title: str
    page: int  # first page of the passage
    page_end: int
    sentence: str  # the claim, markers removed
    sentence_start: int  # offsets of the claim's sentence in the answer text
    sentence_end: int
    supported: bool
    score: float  # mean of lexical and cosine
    lexical: float
    cosine: float
    span_start: int  # best-matching span, offsets into the passage text
    span_end: int
    quote: str  # passage.text[span_start:span_end]
    inferred: bool = False  # attached by the checker, not cited by the model
    ocr: bool = False  # the passage's text came (in part) from OCR of a scanned page

    def to_json(self) -> dict:
        out = asdict(self)
        out["doc"] = out.pop("doc_id")
        out["span"] = [self.span_start, self.span_end]
        return out


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    text: str  # with its markers
    markers: tuple[int, ...]

    @property
    def claim(self) -> str:
        return " ".join(re.sub(r"\s*\[\d+\]", "", self.text).split())


@dataclass(frozen=True)
class SentenceSupport:
    """One sentence of an answer and whether the sources back it."""

    start: int  # offsets of the sentence in the answer text
    end: int
    text: str  # with its markers
    markers: tuple[int, ...]  # the [n] the model wrote in it
    supported: bool | None  # one of its citations is supported; None: a refusal claims nothing

    def to_json(self) -> dict:
        return {"start": self.start, "end": self.end, "text": self.text,
                "markers": list(self.markers), "supported": self.supported}


# -- markers -----------------------------------------------------------------

def marker_numbers(group: str) -> list[int]:
    """'1, 2' -> [1, 2]; '1-3' -> [1, 2, 3]."""
    out: list[int] = []
    for part in re.split(r"\s*[,;]\s*", re.sub(r"(?i)sources?", "", group)):
        bounds = [int(x) for x in re.split(r"\s*[\-\u2013]\s*", part.strip()) if x]
        if len(bounds) == 2 and 0 < bounds[1] - bounds[0] <= MAX_RANGE:
            out.extend(range(bounds[0], bounds[1] + 1))
        else:
            out.extend(bounds)
    return out


def clean_markers(text: str, n_sources: int) -> str:
    """Rewrite markers as `[n][m]`, keeping only numbers 1..n_sources."""

    def replace(match: re.Match) -> str:
        seen: list[int] = []
        for n in marker_numbers(match.group(1)):
            if 1 <= n <= n_sources and n not in seen:
                seen.append(n)
        return "".join(f"[{n}]" for n in seen)

    out = MARKER.sub(replace, text)
    # A dropped marker leaves "word ." or "word  word": close the gap.
    out = re.sub(r"[ \t]+([.,;:!?])", r"\1", out)
    return re.sub(r"[ \t]{2,}", " ", out)


def split_sentences(text: str) -> list[Sentence]:
    """Sentences of `text` with their markers and offsets into `text`.

    The project's one sentence rule (rag.text.sentence_spans: Latin enders then
    a space, CJK/Devanagari/Arabic enders, list items, wide gaps; markers after
    a full stop stay with the sentence they close), applied line by line: every
    newline also ends a sentence, since answers put list items and short facts
    on lines of their own, often without a full stop, and each line is a claim
    of its own; a list item's own number (`2. `) ends no sentence. Markers
    alone on a line belong to the sentence before them.
    """
    out: list[Sentence] = []
    for line in _LINE.finditer(text):
        # A list item's number is no full stop: "2. Tours on Saturdays" is one sentence.
        item = _ITEM_PREFIX.match(text, line.start(), line.end())
        spans = sentence_spans(text, item.end() if item else line.start(), line.end())
        if item and spans:
            spans[0] = (trim(text, line.start(), line.end())[0], spans[0][1])
        for start, end in spans:
            _add_sentence(out, text, start, end)
    return out


def _add_sentence(out: list[Sentence], text: str, start: int, end: int) -> None:
    body = text[start:end]  # trimmed by sentence_spans
    markers = tuple(dict.fromkeys(int(n) for n in _CLEAN_MARKER.findall(body)))
    if out and not _CLEAN_MARKER.sub("", body).strip():
        # Markers alone on a line belong to the sentence before them.
        last = out[-1]
        merged = tuple(dict.fromkeys(last.markers + markers))
        out[-1] = Sentence(last.start, end, text[last.start:end], merged)
        return
    out.append(Sentence(start, end, body, markers))


# -- support -----------------------------------------------------------------

def terms(text: str) -> set[str]:
    """Content terms as the full-text index sees them (stemmed, folded, stop words out)."""
    return content_index_terms(text)


def lexical_recall(claim_terms: set[str], text: str) -> float:
    return len(claim_terms & terms(text)) / len(claim_terms) if claim_terms else 0.0


def numbers_match(claim: str, passage_text: str) -> bool:
    """Every number in the claim occurs in the passage (thousands separators ignored)."""
    have = {n.replace(",", "") for n in _NUMBER.findall(passage_text)}
    return all(n.replace(",", "") in have for n in _NUMBER.findall(claim))


def best_span(claim: str, passage_text: str) -> tuple[int, int]:
    """Offsets of the passage sentence (or two adjacent ones) that best matches the claim."""
    parts = split_sentences(passage_text) or [Sentence(0, len(passage_text), passage_text, ())]
    claim_terms = terms(claim)
    claim_numbers = {n.replace(",", "") for n in _NUMBER.findall(claim)}
    best, best_key = (parts[0].start, parts[0].end), None
    for i, part in enumerate(parts):
        for j in (i, i + 1):
            if j >= len(parts):
                continue
            start, end = part.start, parts[j].end
            # Numbers are the most specific words: the span holding the claim's
            # numbers wins. Then Dice overlap, so a second sentence must add more of
            # the claim than unrelated words; ties go to the shorter, then the earlier.
            span_text = passage_text[start:end]
            span_terms = terms(span_text)
            common = len(claim_terms & span_terms)
            dice = 2 * common / (len(claim_terms) + len(span_terms) or 1)
            numbers = len(claim_numbers & {n.replace(",", "") for n in _NUMBER.findall(span_text)})
            key = (numbers, dice, -(end - start))
            if best_key is None or key > best_key:
                best, best_key = (start, end), key
    return best


def _claim_text(sentence: Sentence) -> str:
    return _LIST_ITEM.sub("", sentence.claim)


def _cosines(embedder, pairs: Sequence[tuple[str, str]]) -> list[float]:
    """Cosine of each (claim, span) pair, all embedded in one batch."""
    if embedder is None or not pairs:
        return [0.0] * len(pairs)
    texts = list(dict.fromkeys(t for pair in pairs for t in pair))
    index = {t: i for i, t in enumerate(texts)}
    vecs = np.asarray(embedder.embed_batch(texts), dtype=np.float32)
    vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
    return [float(vecs[index[a]] @ vecs[index[b]]) for a, b in pairs]


@dataclass
class _Pending:
    marker: int
    sentence: Sentence
    claim: str
    span: tuple[int, int]
    lexical: float
    inferred: bool


def cite(text: str, sources: Sequence[Passage], embedder=None, *,
         infer: bool = True) -> tuple[str, list[Citation]]:
    """Clean the markers of `text` and check every citation against `sources`.

    Returns the text to show and its citations in reading order. With no
    embedder the cosine counts as equal to the lexical recall.
    """
    clean = clean_markers(text, len(sources))
    pending: list[_Pending] = []
    for sentence in split_sentences(clean):
        claim = _claim_text(sentence)
        claim_terms = terms(claim)
        for marker in sentence.markers:
            passage = sources[marker - 1].text
            pending.append(_Pending(marker, sentence, claim, best_span(claim, passage),
                                    lexical_recall(claim_terms, passage), False))
        if not sentence.markers and infer and len(claim_terms) >= MIN_INFER_TERMS:
            guess = _infer(claim, claim_terms, sources)
            if guess:
                pending.append(_Pending(guess[0], sentence, claim, guess[1], guess[2], True))
    pairs = [(p.claim, sources[p.marker - 1].text[p.span[0]:p.span[1]]) for p in pending]
    cosines = _cosines(embedder, pairs)
    out = []
    for p, cos in zip(pending, cosines):
        citation = _citation(p, sources[p.marker - 1], cos if embedder is not None else None)
        if citation.supported or not citation.inferred:
            out.append(citation)
    return clean, out


def _infer(claim: str, claim_terms: set[str], sources: Sequence[Passage]):
    scored = [(lexical_recall(claim_terms, p.text), i) for i, p in enumerate(sources)]
    recall, i = max(scored, default=(0.0, -1))
    if recall < INFER_MIN_LEXICAL or not numbers_match(claim, sources[i].text):
        return None
    return i + 1, best_span(claim, sources[i].text), recall


def _citation(p: _Pending, passage: Passage, cosine: float | None) -> Citation:
    cos = p.lexical if cosine is None else cosine
    score = (p.lexical + cos) / 2
    supported = score >= SUPPORT_THRESHOLD and numbers_match(p.claim, passage.text)
    start, end = p.span
    return Citation(marker=p.marker, passage=p.marker - 1, doc_id=passage.doc_id,
                    title=passage.title, page=passage.page_start, page_end=passage.page_end,
                    sentence=p.claim, sentence_start=p.sentence.start,
                    sentence_end=p.sentence.end, supported=supported, score=round(score, 4),
                    lexical=round(p.lexical, 4), cosine=round(cos, 4), span_start=start,
                    span_end=end, quote=passage.text[start:end], inferred=p.inferred,
                    ocr=passage.ocr)


# -- sentence support --------------------------------------------------------

def sentence_support(text: str, citations: Sequence[Citation], *,
                     refused: bool = False) -> list[SentenceSupport]:
    """Each sentence of `text` (cite()'s cleaned text), supported when one of its citations is.

    `refused`: the answer says the sources hold no answer; it makes no claim to check,
    so its sentences are neither supported nor unsupported (None).
    """
    backed = {(c.sentence_start, c.sentence_end) for c in citations if c.supported}
    return [SentenceSupport(s.start, s.end, s.text, s.markers,
                            None if refused else (s.start, s.end) in backed)
            for s in split_sentences(text)]


def support_level(sentences: Sequence[SentenceSupport]) -> str | None:
    """"all", "some" or "none" of the sentences supported; None when none makes a claim."""
    flags = [s.supported for s in sentences if s.supported is not None]
    if not flags:
        return None
    return "all" if all(flags) else "some" if any(flags) else "none"
