"""Answers end to end with the offline models: real LanceDB, real MiniLM, real SmolLM2."""

from __future__ import annotations

import hashlib
import threading

import pytest

from rag.types import Chunk, Document

pytestmark = pytest.mark.slow

DOCS = {
    "Aurora Observatory History": [
        ("The Aurora observatory was completed in 1932 on the summit of Mount Keller. "
         "Its construction took six years and employed ninety workers."),
        ("The main telescope of the Aurora observatory has a 2.4 metre mirror, ground in Jena. "
         "Visitors may tour the dome on Saturdays."),
    ],
    "Spices of the World": [
        ("Saffron is harvested by hand from the crocus flower in autumn. "
         "A kilogram of saffron needs about 150,000 flowers."),
        "Black pepper grows on a flowering vine in the Malabar region of India.",
    ],
}


def add_docs(runtime) -> dict[str, str]:
    """Store DOCS (one page per chunk) and return title -> document id."""
    ids = {}
    for title, pages in DOCS.items():
        digest = hashlib.sha256(title.encode()).hexdigest()
        doc = Document(path=f"/docs/{title}.txt", title=title, mime="text/plain",
                       sha256=digest, pages=[])
        chunks = [Chunk(digest, i, text, i + 1, i + 1, 0, len(text))
                  for i, text in enumerate(pages)]
        vectors = runtime.embedder.embed_batch([c.text for c in chunks])
        runtime.store.add_documents([(doc, chunks, vectors, b"".join(p.encode() for p in pages))])
        ids[title] = digest
    runtime.store.chunks.refresh_indexes()
    return ids


@pytest.fixture(scope="module")
def generator(pack_config):
    from rag.generate import load_generator

    return load_generator(pack_config)


@pytest.fixture(scope="module")
def engine(generator):
    from rag.engine import LocalEngine

    engine = LocalEngine(generator)
    yield engine
    engine.close()


@pytest.fixture
def docs_runtime(runtime, engine):
    runtime._engine = engine
    runtime.doc_ids = add_docs(runtime)
    return runtime


class NoModel:
    """Stands in for the generator where the model must not be called."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was used ({name})")


def test_unanswerable_question_is_refused_without_calling_the_model(runtime):
    from rag.answering import DoneEvent, SourcesEvent, TokenEvent, stream_answer
    from rag.prompt import NOT_FOUND

    add_docs(runtime)
    runtime._engine = NoModel()
    events = list(stream_answer("Who won the football world cup in 1998?", runtime))
    assert [type(e) for e in events] == [SourcesEvent, TokenEvent, DoneEvent]
    answer = events[-1].answer
    assert answer.refused and answer.text == NOT_FOUND and answer.citations == []
    assert answer.to_json()["refused"] is True


def test_question_answered_in_one_document_cites_it(docs_runtime):
    from rag.answering import CitationEvent, DoneEvent, SourcesEvent, TokenEvent, stream_answer

    events = list(stream_answer("When was the Aurora observatory completed?", docs_runtime,
                                max_tokens=60))
    assert isinstance(events[0], SourcesEvent) and isinstance(events[-1], DoneEvent)
    assert any(isinstance(e, TokenEvent) for e in events)
    answer = events[-1].answer
    assert not answer.refused and "1932" in answer.text
    aurora = docs_runtime.doc_ids["Aurora Observatory History"]
    supported = [c for c in answer.citations if c.supported]
    assert supported and all(c.doc_id == aurora for c in supported)
    assert [e.citation for e in events if isinstance(e, CitationEvent)] == answer.citations
    source = answer.sources[supported[0].passage]
    assert source.text[supported[0].span_start:supported[0].span_end] == supported[0].quote
    assert "1932" in supported[0].quote


def test_answer_json_shape(docs_runtime):
    from rag.answering import answer

    data = answer("How many flowers does a kilogram of saffron need?", docs_runtime,
                  max_tokens=40).to_json()
    assert {"answer", "citations", "sources", "refused"} <= set(data)
    for source in data["sources"]:
        assert {"marker", "doc", "title", "page_start", "page_end", "text", "score"} <= set(source)
    assert [s["marker"] for s in data["sources"]] == list(range(1, len(data["sources"]) + 1))
    for citation in data["citations"]:
        assert {"marker", "doc", "page", "supported", "span", "quote"} <= set(citation)
        text = data["sources"][citation["marker"] - 1]["text"]
        assert text[citation["span"][0]:citation["span"][1]] == citation["quote"]


def test_prefix_cache_gives_the_same_tokens_as_no_cache(docs_runtime, engine):
    from mlx_lm import stream_generate

    from rag.prompt import build_prompt
    from rag.retrieve import search
    from rag.streams import GenRequest

    generator = engine.generator
    question = "Where was the telescope mirror ground?"
    prompt = build_prompt(question, search(question, docs_runtime), generator.tokenizer,
                          budget=2000)
    assert prompt.prefix_len > 50
    plain = [r.token for r in stream_generate(generator.model, generator.tokenizer,
                                              prompt.tokens, max_tokens=40)]
    plain = [t for t in plain if t not in generator.eos_ids]  # the engine never shows them
    hits = generator.prefix_hits
    for _ in range(2):  # the first may compute the prefix, the second must reuse it
        request = GenRequest(prompt.tokens, 40, 0.0, prefix_len=prompt.prefix_len)
        events = list(engine.submit(request))
        assert [t for e in events for t in e.tokens] == plain
        assert events[-1].cached_tokens == prompt.prefix_len
    assert generator.prefix_hits >= hits + 1


def test_concurrent_questions_share_one_model(docs_runtime):
    from rag.answering import answer

    questions = ["When was the Aurora observatory completed?",
                 "How many flowers does a kilogram of saffron need?"]
    alone = [answer(q, docs_runtime, max_tokens=30).text for q in questions]
    together: dict[int, str] = {}

    def run(i: int) -> None:
        together[i] = answer(questions[i], docs_runtime, max_tokens=30).text

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert [together[0], together[1]] == alone


def test_a_line_repeated_by_the_model_stops_generation_and_is_kept_once():
    from rag.answering import _drop_repeated_lines, _LoopGuard

    guard = _LoopGuard()
    stream = ["The Aurora Observatory [1]\n", "The Aurora", " Observatory [1]\n",
              "the aurora observatory [1]\n", "never reached"]
    stops = [guard.stuck(piece) for piece in stream[:4]]
    assert stops == [False, False, False, True]
    assert _drop_repeated_lines("".join(stream[:4])) == "The Aurora Observatory [1]"
    assert _drop_repeated_lines("Yes.\nYes.\nA longer line\nA longer line") == \
        "Yes.\nYes.\nA longer line"
    numbered = _LoopGuard()
    assert [numbered.stuck(f"A Short History (p. {n})\n") for n in (2, 3, 4)] == \
        [False, False, True]
    assert _drop_repeated_lines("A Short History (p. 2)\nA Short History (p. 3)") == \
        "A Short History (p. 2)"


# -- honest answers: per-sentence support, with a model whose text is known -------------

QUESTION = "When was the Aurora observatory completed?"
UNRELATED = "Bananas are the most popular fruit in Ecuador"


def quote_source(user: str, needle: str) -> tuple[int, str]:
    """The number of the prompt's source holding `needle`, and its sentence with it."""
    import re

    for block in re.finditer(r"^\[(\d+)\] [^\n]*\n(.*?)(?=\n\n\[\d+\] |\n\nQuestion: )", user,
                             re.MULTILINE | re.DOTALL):
        sentence = re.search(rf"[^.]*{re.escape(needle)}[^.]*\.", block.group(2))
        if sentence:  # PDF text breaks lines inside sentences
            return int(block.group(1)), " ".join(sentence.group(0).split())
    raise AssertionError(f"no source holds {needle!r}")


def supported_then_unrelated(user: str) -> str:
    """One sentence copied from its source, then one no source says, both cited."""
    n, sentence = quote_source(user, "1932")
    return f"{sentence[:-1]} [{n}]. {UNRELATED} [{n}]."


class ScriptedEngine:
    """An engine whose model writes `reply(user message)`, then ends with `finish`."""

    name = "scripted"

    def __init__(self, reply, finish: str = "stop", error: str = ""):
        from rag.tokencount import CharTokenizer

        self.tokenizer = CharTokenizer()
        self.reply, self.finish, self.error = reply, finish, error

    def submit(self, request):
        from rag.streams import GenEvent, GenStream

        stream = GenStream()
        stream.put(GenEvent(text=self.reply(request.messages[-1]["content"])))
        stream.put(GenEvent(finish=self.finish, error=self.error))
        return stream

    def stats(self):
        return {"running": 0, "waiting": 0}

    def busy(self):
        return False


@pytest.fixture
def scripted(runtime):
    """The runtime over DOCS; `scripted(reply, ...)` sets what its model writes."""
    add_docs(runtime)

    def use(reply, **finish):
        runtime._engine = ScriptedEngine(reply, **finish)
        return runtime

    return use


def test_an_answer_no_source_supports_is_flagged_with_a_notice(scripted):
    from rag.answering import UNSUPPORTED_NOTICE, answer

    result = answer(QUESTION, scripted(lambda user: "The answer is: 2.00%"))
    assert not result.refused and result.citations == []
    assert result.support == "none" and result.notice == UNSUPPORTED_NOTICE
    data = result.to_json()
    assert data["support"] == "none" and data["notice"] == UNSUPPORTED_NOTICE
    assert data["sentences"] == [{"start": 0, "end": 20, "text": "The answer is: 2.00%",
                                  "markers": [], "supported": False}]
    assert data["answer"] == "The answer is: 2.00%" and data["citations"] == []


def test_an_engine_notice_is_kept_beside_the_unsupported_one(scripted):
    from rag.answering import UNSUPPORTED_NOTICE, answer

    runtime = scripted(lambda user: f"{UNRELATED} [1].", finish="timeout",
                       error="stopped: the time limit was reached")
    result = answer(QUESTION, runtime)
    [citation] = result.citations
    assert citation.marker == 1 and not citation.supported
    assert result.finish == "timeout" and result.support == "none"
    assert result.notice == f"stopped: the time limit was reached. {UNSUPPORTED_NOTICE}"


def test_each_sentence_says_whether_a_source_supports_it(scripted):
    from rag.answering import CitationEvent, DoneEvent, stream_answer

    events = list(stream_answer(QUESTION, scripted(supported_then_unrelated)))
    result = events[-1].answer
    assert isinstance(events[-1], DoneEvent) and not result.refused
    assert [e.citation.supported for e in events if isinstance(e, CitationEvent)] == \
        [True, False]
    data = result.to_json()
    assert data["support"] == "some" and data["notice"] == ""
    first, second = data["sentences"]
    assert first["supported"] is True and "1932" in first["text"]
    assert second["supported"] is False and second["text"].startswith(UNRELATED)
    assert second["markers"] == first["markers"] and len(first["markers"]) == 1
    for s in data["sentences"]:
        assert data["answer"][s["start"]:s["end"]] == s["text"]


def test_a_refusal_is_not_flagged_as_unsupported(scripted):
    from rag.answering import answer
    from rag.prompt import NOT_FOUND

    result = answer(QUESTION, scripted(lambda user: NOT_FOUND))
    data = result.to_json()
    assert result.refused and data["support"] is None and data["notice"] == ""
    assert [s["supported"] for s in data["sentences"]] == [None]


def test_rag_ask_marks_unsupported_sentences_and_prints_the_notice(scripted, monkeypatch):
    import json

    from click.testing import CliRunner

    import rag.cli.ask
    from rag.answering import UNSUPPORTED_NOTICE

    runtime = scripted(supported_then_unrelated)
    monkeypatch.setattr(rag.cli.ask, "_runtime", lambda config: runtime)
    result = CliRunner().invoke(rag.cli.ask.ask, [QUESTION])
    assert result.exit_code == 0, result.output
    shown = " ".join(result.output.split())
    assert f"Not supported by the sources [unsupported] {UNRELATED} [" in shown
    assert "1932" in shown.split("Not supported by the sources")[0]  # the answer, above
    assert "1932" not in shown.split("Not supported by the sources")[1].split("Citations")[0]
    assert "notice:" not in shown

    runtime._engine = ScriptedEngine(lambda user: "The answer is: 2.00%")
    result = CliRunner().invoke(rag.cli.ask.ask, [QUESTION])
    shown = " ".join(result.output.split())
    assert "[unsupported] The answer is: 2.00%" in shown
    assert f"notice: {UNSUPPORTED_NOTICE}" in shown
    data = json.loads(CliRunner().invoke(rag.cli.ask.ask, [QUESTION, "--json"]).output)
    assert data["support"] == "none" and data["notice"] == UNSUPPORTED_NOTICE
    assert [s["supported"] for s in data["sentences"]] == [False]
