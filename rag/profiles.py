"""Document profiles: what a document says about itself, for telling it from its neighbours.

A profile is written at ingestion, in two parts stored with the document:
- the profile text (`DocRecord.profile`): the title, the file name's words and
  the start of the first pages (a filing's cover names its issuer, form and
  period; a paper's first page its title, authors and abstract);
- its vocabulary: the terms its pages use most, with their counts (an issuer's
  name is on every page of its filing, and a year on most pages of that
  year's report).
Both are searched beside the chunks (rag/retrieve.py: profile_prior). Which
terms distinguish a document is decided at query time, against the other
documents' profiles (IDF across documents), so nothing here knows a genre.
Years are the one kind of term read apart (_Years): a year says when, not who.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import PurePath

PROFILE_CHARS = 2000  # of the first pages' text
PROFILE_PAGES = 3
VOCABULARY = 1500  # terms kept per document
# Two documents whose vocabularies' cosine (idf * log(1 + count) weights) reaches this
# are one family (look-alikes: an issuer's filings). FinanceBench: filings of one issuer
# median 0.49, of two issuers 99% under 0.19 (at most 0.38); covidqa papers at most 0.24,
# xquad articles 0.17: prose libraries have no families.
LOOK_ALIKE = 0.3
SIMILAR_CACHE = 100_000  # document pairs whose similarity an index keeps


def name_words(path: str) -> str:
    """A file name as words: 'AMCOR_2023Q2_10Q.pdf' -> 'AMCOR 2023Q2 10Q'."""
    stem = PurePath(path.replace("\\", "/")).stem
    return " ".join(w for w in re.split(r"[\s_\-.+]+", stem) if w)


def profile_text(title: str, path: str, pages: Sequence[str]) -> str:
    """The profile of a document from its title, path and pages' texts (first first)."""
    head, used = [], 0
    for text in pages[:PROFILE_PAGES]:
        text = " ".join(text.split())
        if not text:
            continue
        head.append(text[:PROFILE_CHARS - used])
        used += len(head[-1])
        if used >= PROFILE_CHARS:
            break
    parts = [title.strip(), name_words(path), " ".join(head)]
    return "\n".join(p for p in parts if p)


_SPLIT = re.compile(r"\d+|[^\W\d_]+")
_UNIT = re.compile(r"[^\W\d_]+\d+")  # letters, then digits: 'q2', 'fy2018'
_QUARTER_YEAR = re.compile(r"(q[1-4])((?:19|20)\d\d)")  # 'q22023'
_YEAR = re.compile(r"(?:19|20)\d\d")


def profile_terms(text: str) -> list[str]:
    """Terms for matching questions to profiles: the index's stemmed terms, plus the
    letter and digit parts of mixed tokens ('fy2018' -> 'fy', '2018'; '10-k' and '10k'
    meet at '10', 'k' is too short to count) and the letters-then-digits units inside
    them ('2023q2' -> 'q2', so a file named for its quarter meets "Q2 of FY2023"; a
    quarter written against its year, 'q22023', is 'q2' and '2023')."""
    from rag.lexical import index_terms

    out = []
    for term in index_terms(text):
        out.append(term)
        parts = _SPLIT.findall(term)
        if len(parts) > 1:
            out.extend(p for p in parts if len(p) > 1)
            out.extend(u for u in _UNIT.findall(term) if u != term)
            quarter = _QUARTER_YEAR.fullmatch(term)
            if quarter:
                out.extend(quarter.groups())
    return out


def vocabulary(texts: Iterable[str], size: int = VOCABULARY) -> dict[str, int]:
    """A document's `size` most frequent terms (profile_terms, stop words out) and their
    counts, most frequent first: what its pages keep talking about (an issuer's name,
    its periods, a paper's subject)."""
    from rag.lexical import STOP_WORDS

    counts: Counter = Counter()
    for text in texts:
        counts.update(t for t in profile_terms(text) if t not in STOP_WORDS)
    return dict(counts.most_common(size))


class _Vocabularies:
    """Term weights idf * log(1 + count) over the documents' vocabularies, idf = log(N/df):
    a term every document has counts for nothing; an issuer's name, on every page of its
    own filings only, counts most (BM25's saturation and length normalisation were
    measured and did worse here: they let a short document with a few of a question's
    common terms outscore the long one the question names)."""

    def __init__(self, counts: Mapping[str, Mapping[str, int]]):
        self.counts = counts
        df: Counter = Counter()
        for c in counts.values():
            df.update(c.keys())
        n = len(counts)
        self.idf = {t: math.log(n / k) for t, k in df.items()}
        self.norms = {d: math.sqrt(sum((self.idf[t] * math.log1p(k)) ** 2 for t, k in c.items()))
                      for d, c in counts.items()}

    def similarity(self, a: str, b: str) -> float:
        """The cosine of two documents' vocabularies, weighted as in `scores`."""
        ca, cb = self.counts[a], self.counts[b]
        if len(ca) > len(cb):
            ca, cb = cb, ca
        dot = sum(self.idf[t] ** 2 * math.log1p(k) * math.log1p(cb[t])
                  for t, k in ca.items() if t in cb)
        norm = self.norms[a] * self.norms[b]
        return dot / norm if norm else 0.0

    def scores(self, terms: set[str]) -> dict[str, float]:
        terms = {t for t in terms if self.idf.get(t, 0.0) > 0 and not is_year(t)}
        out = {}
        for doc_id, counts in self.counts.items():
            score = sum(self.idf[t] * math.log1p(counts[t]) for t in terms if counts.get(t))
            if score > 0:
                out[doc_id] = score
        return out


def is_year(term: str) -> bool:
    """A term that reads as a year (1900-2099)."""
    return bool(_YEAR.fullmatch(term))


class _Years:
    """What period a document is about: its mentions of each year over those of the year
    it mentions most. A filing for 2018 names 2018 most (its comparatives name 2017
    and 2016 less, its debt maturities 2022 rarely); a paper, the years of its data.
    A question is matched by the latest year it names: a question spanning years
    ("from FY2020 to FY2022") is answered by the document covering the last of them,
    which reports the earlier ones as comparatives. Counting years as ordinary terms
    did worse (ProfileIndex): a year is on nearly every document, so its IDF is small,
    and how much a document talks about it is swamped by the issuer's terms."""

    def __init__(self, counts: Mapping[str, Mapping[str, int]]):
        self.shares = {}
        for doc_id, c in counts.items():
            years = {t: n for t, n in c.items() if is_year(t)}
            top = max(years.values(), default=0)
            if top:
                self.shares[doc_id] = {t: n / top for t, n in years.items()}

    def scores(self, terms: set[str]) -> dict[str, float]:
        years = sorted(t for t in terms if is_year(t))
        if not years:
            return {}
        latest = years[-1]
        return {d: s[latest] for d, s in self.shares.items() if s.get(latest)}


class _BM25:
    K1, B = 1.2, 0.75

    def __init__(self, counts: Mapping[str, Mapping[str, int]]):
        self.counts = counts
        self.lengths = {d: sum(c.values()) for d, c in counts.items()}
        self.avg = (sum(self.lengths.values()) / len(counts)) if counts else 0.0
        df: Counter = Counter()
        for c in counts.values():
            df.update(c.keys())
        n = len(counts)
        self.idf = {t: math.log(1.0 + (n - k + 0.5) / (k + 0.5)) for t, k in df.items()}

    def scores(self, terms: set[str]) -> dict[str, float]:
        terms = {t for t in terms if t in self.idf}
        out: dict[str, float] = {}
        if not terms or not self.avg:
            return out
        for doc_id, counts in self.counts.items():
            norm = self.K1 * (1 - self.B + self.B * self.lengths[doc_id] / self.avg)
            score = 0.0
            for t in terms:
                f = counts.get(t)
                if f:
                    score += self.idf[t] * f * (self.K1 + 1) / (f + norm)
            if score > 0:
                out[doc_id] = score
        return out


class ProfileIndex:
    """Which documents a question names: its terms weighted over each document's
    vocabulary (who and what the whole document is about, see _Vocabularies) plus
    BM25 over its profile text (its cover: form, period, title), `cover_weight` times,
    IDF taken across the documents; then, when the question names a year, each score
    times 1 + `year_weight` * the document's share of the latest year named (_Years):
    a year picks among the documents the rest of the question names, never routes to
    one by itself. Measured on FinanceBench (document hit@1 of the profile ranking
    alone, 40 dev questions over 56 filings): without years, 0.78 (cover at 2, the
    best of 1/2/3); with years, cover at 1: year_weight 0.2/0.3/0.5/0.75/1.0:
    0.90/0.90/0.98/0.98/0.98 (cover at 2: 0.85 to 0.90); added to the score instead
    of multiplying it, 0.95 at best, but then a year outweighs a small library's issuer
    terms; the share of every year named (best, mean) instead of the latest, 0.85/0.88."""

    def __init__(self, profiles: Mapping[str, tuple[str, Mapping[str, int]]],
                 cover_weight: float = 1.0, year_weight: float = 0.75):
        self.cover_weight = cover_weight
        self.year_weight = year_weight
        self.vocab = _Vocabularies({d: v for d, (_, v) in profiles.items()})
        self.years = _Years({d: v for d, (_, v) in profiles.items()})
        self.cover = _BM25({d: Counter(profile_terms(text)) for d, (text, _) in profiles.items()})
        self.size = len(profiles)
        self._similar: dict[tuple[str, str], float] = {}
        self._look_alike: dict[str, bool] = {}

    def __len__(self) -> int:
        """The number of documents."""
        return self.size

    def scores(self, question: str) -> dict[str, float]:
        """The question's score for each document that shares a term with it (> 0)."""
        from rag.lexical import STOP_WORDS

        terms = {t for t in profile_terms(question) if t not in STOP_WORDS}
        out = self.vocab.scores(terms)
        for doc_id, score in self.cover.scores(terms).items():
            out[doc_id] = out.get(doc_id, 0.0) + self.cover_weight * score
        years = self.years.scores(terms)
        return {d: s * (1 + self.year_weight * years.get(d, 0.0)) for d, s in out.items()}

    def prior(self, question: str, *, floor: float = 0.5, most: int = 5, gap: float = 0.6,
              scale: float = 1.0, sharpness: float = 1.0) -> Named:
        """The documents the question singles out, as a document prior (document id ->
        value in (0, scale]): those scoring above `floor` of the best, the best at `scale`
        and the others by their share above the floor, raised to `sharpness`. None when
        the question does not single documents out: more than a third of the library's
        documents come that close (a library of a few documents needs no routing) or
        more than `most` squared (families are told apart pair by pair), or
        the best document left out scores within `gap` of the best, or they fall into
        more than `most` families (look-alike documents count as one, see `families`)
        and the best document has no look-alike in the library; where it has one (an
        issuer's filings), the `most` best families are kept: a question naming its
        issuer also carries words that many other documents use a little ("round to
        one decimal place"). Its `certainty` (see Named) is 1 - the value of the best
        named document outside the best one's family, where that family has two named
        documents or more."""
        scores = self.scores(question)
        if not scores:
            return Named()
        top = max(scores.values())
        named = {d: scale * ((s / top - floor) / (1 - floor)) ** sharpness
                 for d, s in scores.items() if s / top > floor}
        rest = max((s for d, s in scores.items() if d not in named), default=0.0)
        if len(named) > min(most * most, self.size / 3) or 1 - rest / top < gap:
            return Named()
        family = self.families(named)
        lead = max(named, key=lambda d: scores[d])
        if len(set(family.values())) > min(most, self.size / 3):
            if not self.has_look_alike(lead):
                return Named()
            best: dict[str, float] = {}
            for d in named:
                best[family[d]] = max(best.get(family[d], 0.0), scores[d])
            kept = set(sorted(best, key=lambda f: -best[f])[:most])
            named = {d: v for d, v in named.items() if family[d] in kept}
        kin = [d for d in named if family[d] == family[lead]]
        other = max((v for d, v in named.items() if family[d] != family[lead]), default=0.0)
        return Named(named, certainty=max(0.0, 1 - other / scale) if len(kin) > 1 else 0.0)

    def has_look_alike(self, doc: str) -> bool:
        """Whether another document of the library is at least LOOK_ALIKE alike: looked
        for among those sharing one of its 5 heaviest terms (look-alikes share them: an
        issuer's name), once per document."""
        if doc not in self._look_alike:
            counts = self.vocab.counts[doc]
            heavy = sorted(counts, key=lambda t: -self.vocab.idf[t] * math.log1p(counts[t]))[:5]
            self._look_alike[doc] = any(
                other != doc and any(t in c for t in heavy)
                and self._similarity(doc, other) >= LOOK_ALIKE
                for other, c in self.vocab.counts.items())
        return self._look_alike[doc]

    def families(self, docs: Iterable[str]) -> dict[str, str]:
        """Each of `docs` -> its family among them: documents linked by vocabularies at
        least LOOK_ALIKE alike, directly or through one another (single link)."""
        docs = sorted(docs)
        family = {d: d for d in docs}

        def root(d: str) -> str:
            while family[d] != d:
                d = family[d]
            return d

        for i, a in enumerate(docs):
            for b in docs[i + 1:]:
                if root(a) != root(b) and self._similarity(a, b) >= LOOK_ALIKE:
                    family[root(b)] = root(a)
        return {d: root(d) for d in docs}

    def _similarity(self, a: str, b: str) -> float:
        key = (a, b) if a < b else (b, a)
        if key not in self._similar:
            if len(self._similar) >= SIMILAR_CACHE:  # a long-lived server's bound
                self._similar.clear()
            self._similar[key] = self.vocab.similarity(a, b)
        return self._similar[key]


class Named(dict):
    """A profile prior (document id -> value) and how sure it is, 0 to 1. A question
    that names one family of look-alike documents (an issuer, whose filings' passages
    share every row label) and no other is sure: the passages cannot choose among the
    family, and the family is what the question named. In a library without families
    (papers, articles) a prior is never sure, and the passages' flatness alone weighs
    it (rag/retrieve.py: _add_prior)."""

    def __init__(self, values: Mapping[str, float] | None = None, certainty: float = 0.0):
        super().__init__(values or {})
        self.certainty = certainty
