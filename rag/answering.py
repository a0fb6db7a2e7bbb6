"""Question -> cited answer, as one stream of typed events that every front end consumes.

    SourcesEvent(sources)    the numbered passages in the prompt; [n] is sources[n - 1]
    TokenEvent(text)         a piece of the model's raw text, as it is generated
    CitationEvent(citation)  one checked citation (rag/citations.py), after generation
    DoneEvent(answer)        the final Answer: cleaned text, citations, per-sentence
                             support, figures

The raw tokens may hold markers that point nowhere; `DoneEvent.answer.text` is
the cleaned text a UI should show once the stream ends. When retrieval finds
nothing relevant (rag.retrieve.is_relevant), the model is not called: the
stream is SourcesEvent([]), one TokenEvent with NOT_FOUND, DoneEvent(refused).

`start_answer` does the blocking part up front (retrieval, the prompt, a place
in the generation engine's queue: it raises streams.Busy when there is none),
so a server can refuse before it starts a response; the `AnswerRun` it returns
yields the events to a thread (`events()`) or an event loop (`aevents()`).
`stream_answer`, `astream_answer` and `answer` wrap it. Exceptions propagate
(a failed generation as streams.EngineError); the web layer maps them.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from rag import retrieve
from rag.citations import (
    Citation,
    SentenceSupport,
    cite,
    sentence_support,
    split_sentences,
    support_level,
)
from rag.prompt import NOT_FOUND, SYSTEM_PROMPT, build_prompt
from rag.runtime import Runtime
from rag.streams import EngineError, GenEvent, GenRequest, GenStream
from rag.types import Passage, Turn

# A model's own "not in the sources" reply, in the first sentence of its answer.
_REFUSAL = re.compile(
    r"(?:do(?:es)?|did) not (?:contain|include|mention|provide|say)"
    r"|(?:cannot|can't|can not|unable to) (?:answer|find|determine|tell)"
    r"|\bno (?:information|answer|mention)\b"
    r"|not (?:mentioned|stated|provided|given) in the (?:sources|documents|context|text)",
    re.IGNORECASE)

# The notice of a (non-refused) answer none of whose sentences the sources support.
UNSUPPORTED_NOTICE = ("No sentence of this answer is supported by the sources:"
                      " check it against the documents.")


@dataclass
class Answer:
    """A finished answer. Two views derived from text and citations (properties, and
    keys of `to_json()`):

    sentences  one entry per sentence of `text`: start, end (offsets in `text`), text (with
               its markers), markers, supported (true when one of its citations is
               supported; null in a refused answer, which claims nothing to check)
    support    "all", "some" or "none" of the sentences supported; null for a refusal
    """

    question: str
    text: str
    citations: list[Citation]
    sources: list[Passage]
    refused: bool = False
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens served from the prefix cache
    generation_tokens: int = 0
    prompt_tps: float = 0.0  # prefill speed over the tokens not cached
    generation_tps: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds, by stage
    raw_text: str = ""  # what the model wrote, before invalid markers were dropped
    # How generation ended: "stop", "length", "timeout" (the time limit), "loop" (a
    # repeated line), "refused" (no model call); `notice` says it in words when it matters.
    finish: str = "stop"
    # Includes UNSUPPORTED_NOTICE when no sentence of a non-refused answer is supported.
    notice: str = ""

    @property
    def sentences(self) -> list[SentenceSupport]:
        return sentence_support(self.text, self.citations, refused=self.refused)

    @property
    def support(self) -> str | None:
        return support_level(self.sentences)

    def to_json(self) -> dict:
        sentences = self.sentences
        return {
            "question": self.question,
            "answer": self.text,
            "refused": self.refused,
            "citations": [c.to_json() for c in self.citations],
            "sources": [source_json(i + 1, p) for i, p in enumerate(self.sources)],
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "generation_tokens": self.generation_tokens,
            "prompt_tps": round(self.prompt_tps, 2),
            "generation_tps": round(self.generation_tps, 2),
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
            "finish": self.finish,
            "notice": self.notice,
            "sentences": [s.to_json() for s in sentences],
            "support": support_level(sentences),
        }


def source_json(marker: int, p: Passage) -> dict:
    return {"marker": marker, "doc": p.doc_id, "title": p.title, "path": p.path,
            "page_start": p.page_start, "page_end": p.page_end, "text": p.text,
            "score": p.score, "scores": dict(p.scores), "chunk_id": p.chunk_id,
            "char_start": p.char_start, "char_end": p.char_end, "heading": p.heading,
            "ocr": p.ocr}


@dataclass(frozen=True)
class SourcesEvent:
    type: ClassVar[str] = "sources"
    sources: list[Passage]


@dataclass(frozen=True)
class TokenEvent:
    type: ClassVar[str] = "token"
    text: str


@dataclass(frozen=True)
class CitationEvent:
    type: ClassVar[str] = "citation"
    citation: Citation


@dataclass(frozen=True)
class DoneEvent:
    type: ClassVar[str] = "done"
    answer: Answer


Event = SourcesEvent | TokenEvent | CitationEvent | DoneEvent


def is_refusal(text: str) -> bool:
    """Whether the model said the sources do not hold the answer (first sentence)."""
    sentences = split_sentences(text)
    return bool(sentences) and bool(_REFUSAL.search(sentences[0].text))


def start_answer(question: str, runtime: Runtime, *, k: int | None = None,
                 doc_ids: Sequence[str] | None = None, max_tokens: int | None = None,
                 temperature: float | None = None, history: Sequence[Turn] = ()) -> AnswerRun:
    """Retrieve, build the prompt and queue it on the engine (blocking: it embeds).

    `history`: the conversation's earlier turns, oldest first (a follow-up question is
    searched and answered in their light).

    Raises streams.Busy when the engine's queue is full, before anything is sent.
    """
    config = runtime.config
    k = config.k if k is None else k
    max_tokens = config.max_tokens if max_tokens is None else max_tokens
    temperature = config.temperature if temperature is None else temperature
    if not question.strip():
        raise ValueError("question: empty")
    if max_tokens >= config.context_tokens:
        raise ValueError(f"max_tokens ({max_tokens}) must be below context_tokens"
                         f" ({config.context_tokens})")
    run = AnswerRun(question, runtime)
    passages = retrieve.search(question, runtime, k=k, doc_ids=list(doc_ids or []) or None,
                               history=history)
    run.clock.mark("retrieve_s")
    if not passages or not retrieve.is_relevant(passages):
        return run
    engine = runtime.engine()
    run.clock.mark("load_s")
    run.prompt = build_prompt(question, passages, engine.tokenizer,
                              budget=config.context_tokens - max_tokens, history=history)
    run.clock.mark("prompt_s")
    messages = ({"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": run.prompt.user})
    run.stream = engine.submit(GenRequest(tokens=run.prompt.tokens, max_tokens=max_tokens,
                                          temperature=temperature,
                                          prefix_len=run.prompt.prefix_len,
                                          messages=messages))
    run.clock.timings["to_generate_s"] = run.clock.total()  # question -> queued for the model
    return run


class AnswerRun:
    """One answer in progress: its prompt, its place in the engine, and the events to come.

    `events()` (from a thread) and `aevents()` (from an event loop) yield the
    same events; leaving either early cancels the generation.
    """

    def __init__(self, question: str, runtime: Runtime):
        self.question, self.runtime = question, runtime
        self.clock = _Clock()
        self.prompt = None
        self.stream: GenStream | None = None
        self.pieces: list[str] = []
        self.last: GenEvent | None = None
        self.loop = _LoopGuard()
        self.generated = 0  # tokens seen (the engine's own count comes with its last event)
        self.token_times: list[float] = []  # first and latest token arrival

    def events(self) -> Iterator[Event]:
        if self.stream is None:
            yield from self._not_found()
            return
        yield SourcesEvent(self.prompt.sources)
        try:
            for event in self.stream:
                token = self._feed(event)
                if token:
                    yield token
                if self.loop.looping:
                    break
        finally:
            self.stream.close()
        yield from self._finish()

    async def aevents(self) -> AsyncIterator[Event]:
        if self.stream is None:
            for event in self._not_found():
                yield event
            return
        yield SourcesEvent(self.prompt.sources)
        try:
            async for event in self.stream:
                token = self._feed(event)
                if token:
                    yield token
                if self.loop.looping:
                    break
        finally:
            self.stream.close()
        loop = asyncio.get_running_loop()
        for event in await loop.run_in_executor(self.runtime.worker, self._finish_list):
            yield event

    def _feed(self, event: GenEvent) -> TokenEvent | None:
        if self.last is None:
            self.clock.timings["first_token_s"] = self.clock.total()
        self.last = event
        if event.finish == "error":
            raise EngineError(event.error or "generation failed")
        if not event.text:
            return None
        self.generated += len(event.tokens) or 1
        self.token_times[1:] = [time.perf_counter()]
        if len(self.token_times) == 1:
            self.token_times.insert(0, self.token_times[0])
        self.pieces.append(event.text)
        self.loop.stuck(event.text)
        return TokenEvent(event.text)

    def _finish_list(self) -> list[Event]:
        return list(self._finish())

    def _finish(self) -> Iterator[Event]:
        clock, prompt, last = self.clock, self.prompt, self.last
        clock.mark("generate_s")
        raw = _drop_repeated_lines("".join(self.pieces).strip())
        refused = is_refusal(raw)
        text, citations = cite(raw, prompt.sources, self.runtime.embedder, infer=not refused)
        refused = refused and not any(c.supported and not c.inferred for c in citations)
        clock.mark("citations_s")
        for citation in citations:
            yield CitationEvent(citation)
        clock.timings["total_s"] = clock.total()
        final = last if last is not None and last.finish else None  # None: we stopped first
        finish = "loop" if self.loop.looping else final.finish if final else "stop"
        generated = final.generation_tokens if final else self.generated
        span = self.token_times[-1] - self.token_times[0] if self.token_times else 0.0
        answer = Answer(
            question=self.question, text=text, citations=citations, sources=prompt.sources,
            refused=refused, prompt_tokens=len(prompt.tokens),
            cached_tokens=final.cached_tokens if final else prompt.prefix_len,
            generation_tokens=generated,
            prompt_tps=final.prompt_tps if final else 0.0,
            generation_tps=final.generation_tps if final else
            (generated - 1) / span if span > 0 else 0.0,
            timings=clock.timings, raw_text=raw, finish=finish,
            notice=final.error if final else "stopped: the model repeated a line"
            if self.loop.looping else "")
        if answer.support == "none":
            answer.notice = _join_notices(answer.notice, UNSUPPORTED_NOTICE)
        yield DoneEvent(answer)

    def _not_found(self) -> Iterator[Event]:
        yield SourcesEvent([])
        yield TokenEvent(NOT_FOUND)
        self.clock.timings["total_s"] = self.clock.total()
        yield DoneEvent(Answer(question=self.question, text=NOT_FOUND, citations=[],
                               sources=[], refused=True, timings=self.clock.timings,
                               finish="refused"))


def _join_notices(first: str, second: str) -> str:
    first = first.strip()
    if first and not first.endswith((".", "!", "?")):
        first += "."
    return f"{first} {second}".strip()


def stream_answer(question: str, runtime: Runtime, **options) -> Iterator[Event]:
    """Retrieve, prompt, generate and check citations, yielding events (see module doc).

    Options: k, doc_ids, max_tokens, temperature (see start_answer).
    """
    yield from start_answer(question, runtime, **options).events()


async def astream_answer(question: str, runtime: Runtime, **options) -> AsyncIterator[Event]:
    """The same events from an event loop: blocking steps run on `runtime.worker`."""
    loop = asyncio.get_running_loop()
    run = await loop.run_in_executor(runtime.worker,
                                     functools.partial(start_answer, question, runtime, **options))
    async for event in run.aevents():
        yield event


def _line_key(line: str) -> str:
    # Lines that differ only in numbers ("... (p. 2)", "... (p. 3)") are one loop.
    return re.sub(r"\d+", "#", " ".join(line.split()).lower())


class _LoopGuard:
    """Small models can fall into repeating one line forever; stop at its third copy."""

    def __init__(self) -> None:
        self.line = ""
        self.seen: dict[str, int] = {}
        self.looping = False

    def stuck(self, text: str) -> bool:
        *done, self.line = (self.line + text).split("\n")
        for line in done:
            key = _line_key(line)
            if len(key) > 10:
                self.seen[key] = self.seen.get(key, 0) + 1
                if self.seen[key] >= 3:
                    self.looping = True
        return self.looping


def _drop_repeated_lines(text: str) -> str:
    """Keep the first copy of each repeated line (of more than a few characters)."""
    kept, seen = [], set()
    for line in text.split("\n"):
        key = _line_key(line)
        if len(key) > 10 and key in seen:
            continue
        seen.add(key)
        kept.append(line)
    return "\n".join(kept).strip()


def answer(question: str, runtime: Runtime, **options) -> Answer:
    """The whole answer at once: `stream_answer` collected (same options)."""
    done = None
    for event in stream_answer(question, runtime, **options):
        if isinstance(event, DoneEvent):
            done = event.answer
    assert done is not None  # stream_answer always ends with DoneEvent
    return done


class _Clock:
    """Stage timings: `mark(name)` records the seconds since the previous mark."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.timings: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = now - self.last
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.start
