"""Gold rules, metrics and the `rag eval` command (real LanceDB, real MiniLM)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rag.evaluate import (
    Evidence,
    Question,
    evaluate_answers,
    evaluate_retrieval,
    first_gold_document,
    first_gold_rank,
    is_gold,
    load_questions,
    normalise,
    summarise,
    text_matches,
)
from rag.types import Passage


def passage(text: str, path: str = "/d/a.txt", pages: tuple[int, int] = (1, 1),
            doc_id: str = "d") -> Passage:
    return Passage(chunk_id="c", doc_id=doc_id, title="a", path=path, text=text,
                   page_start=pages[0], page_end=pages[1], char_start=0, char_end=len(text))


GOLD = "Mother-to-child transmission (MTCT) is the main cause of HIV-1 infection in children."


def test_contains_after_lowercase_and_whitespace():
    text = "Intro.  MOTHER-to-child transmission\n(MTCT) is the main   cause of HIV-1 infection" \
           " in children. More text follows here."
    assert is_gold(passage(text), [Evidence("a.txt", text=GOLD)], "a.txt")


def test_half_overlap_counts_and_less_does_not():
    gold = normalise(GOLD)
    half = gold[: len(gold) // 2 + 1]
    assert text_matches("unrelated start " + half + " unrelated end", gold)
    # A chunk boundary cut the gold sentence: the passage is shorter than the gold text,
    # and the shared stretch is at least half of the passage.
    assert text_matches(gold[-30:], gold)
    assert not text_matches("x" * 40 + gold[:10] + "y" * 40, gold)
    assert not text_matches("", gold) and not text_matches(gold, "")


def test_wrong_document_is_not_gold():
    assert not is_gold(passage(GOLD, path="/d/b.txt"), [Evidence("a.txt", text=GOLD)], "b.txt")


def test_pdf_rule_uses_page_ranges():
    ev = [Evidence("r.pdf", page=7, text="an annotator excerpt")]
    assert is_gold(passage("anything", "/x/r.pdf", (6, 7)), ev, "r.pdf")
    assert not is_gold(passage("anything", "/x/r.pdf", (8, 9)), ev, "r.pdf")
    assert not is_gold(passage("anything", "/x/s.pdf", (7, 7)), ev, "s.pdf")


def test_rank_and_metrics():
    q = Question("1", "?", "en", (Evidence("a.txt", text=GOLD),))
    assert first_gold_rank([passage("An unrelated passage about valves."), passage(GOLD)], q) == 2
    assert first_gold_rank([passage("An unrelated passage about valves.")], q) is None
    m = summarise([1, 2, None, 7])
    assert (m["hit@1"], m["hit@5"], m["hit@10"], m["n"]) == (0.25, 0.5, 0.75, 4)
    assert m["mrr@10"] == pytest.approx((1 + 1 / 2 + 1 / 7) / 4)


def test_document_rank_counts_distinct_documents_before_the_gold_one():
    q = Question("1", "?", "en", (Evidence("b.pdf", page=3),))
    ranked = [passage("x", "/d/a.pdf", doc_id="a"), passage("y", "/d/a.pdf", doc_id="a"),
              passage("z", "/d/c.pdf", doc_id="c"), passage("w", "/d/b.pdf", (9, 9), "b")]
    # The right document third among the documents, though no passage of it is gold.
    assert first_gold_document(ranked, q) == 3 and first_gold_rank(ranked, q) is None
    assert first_gold_document(ranked[:3], q) is None
    # Stored under another name: the mapping says which file it was.
    assert first_gold_document(ranked, q, lambda p: {"c.pdf": "b.pdf"}.get(p.rsplit("/")[-1],
                                                                          "")) == 2
    m = summarise([None, 4], doc_ranks=[1, 3])
    assert (m["doc_hit@1"], m["doc_hit@5"]) == (0.5, 1.0)


def test_evaluate_retrieval_by_language():
    qs = [Question("1", "a", "en", (Evidence("a.txt", text="gold"),)),
          Question("2", "b", "th", (Evidence("a.txt", text="gold"),))]
    report = evaluate_retrieval(qs, lambda q, k, h: [passage("gold" if q == "a" else "miss")])
    assert report["hit@1"] == 0.5 and report["by_lang"]["en"]["hit@1"] == 1.0
    assert report["by_lang"]["th"]["hit@10"] == 0.0 and len(report["questions"]) == 2
    assert "by_kind" not in report and "rank_alone" not in report["questions"][0]


def test_history_rows_are_scored_per_kind_with_and_without_history(tmp_path):
    rows = [{"id": "1", "question": "What was the sample size?", "kind": "same",
             "evidence": [{"doc": "a.txt", "text": "gold"}],
             "history": [{"role": "user", "content": "What did the valve study test?"},
                         {"role": "assistant", "content": "Relief valves."}]},
            {"id": "2", "question": "Where did the cat sleep?", "kind": "switch",
             "evidence": [{"doc": "b.txt", "text": "gold"}],
             "history": [{"role": "user", "content": "What did the valve study test?"},
                         {"role": "assistant", "content": "Relief valves."}]},
            {"id": "3", "question": "Where did the cat sleep?",
             "evidence": [{"doc": "b.txt", "text": "gold"}]}]
    path = tmp_path / "q.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    questions = load_questions(path)
    assert questions[0].history == (("user", "What did the valve study test?"),
                                    ("assistant", "Relief valves."))
    assert [q.kind for q in questions] == ["same", "switch", "single"]
    calls = []

    def search(question, k, history):
        calls.append((question, k, history))
        if question.startswith("What did the valve"):  # the earlier turn: it finds doc "a"
            return [passage("valves", "/d/a.txt", doc_id="a"),
                    passage("valves", "/d/a.txt", doc_id="a"),
                    passage("x", "/d/c.txt", doc_id="c")]
        if question == "What was the sample size?":  # found only in the light of "a"
            gold = history and history[-1].doc_ids[0] == "a"
            return [passage("gold" if gold else "miss", "/d/a.txt")]
        return [passage("gold", "/d/b.txt")]  # the cat question, with or without history

    report = evaluate_retrieval(questions, search, k=5, turn_k=3)
    assert report["n"] == 3 and report["hit@1"] == 1.0  # as asked: with history
    same, switch = report["by_kind"]["same"], report["by_kind"]["switch"]
    assert same["history"]["hit@5"] == 1.0 and same["alone"]["hit@5"] == 0.0
    assert switch["history"]["hit@5"] == switch["alone"]["hit@5"] == 1.0
    assert report["by_kind"]["single"]["history"] == report["by_kind"]["single"]["alone"]
    first = report["questions"][0]
    assert first["kind"] == "same" and first["rank"] == 1 and first["rank_alone"] is None
    assert first["turn_docs"] == [["a", "c"]]  # the earlier turn's documents, found by search
    # The earlier turn was searched with turn_k passages; its answer is carried along.
    earlier = [c for c in calls if c[0].startswith("What did the valve")]
    assert earlier and all(k == 3 and h == () for _, k, h in earlier)
    turn = next(h for q, _, h in calls if q == "What was the sample size?" and h)[0]
    assert turn.question == "What did the valve study test?" and turn.answer == "Relief valves."


def test_evaluate_answers_counts_written_markers_and_support():
    from rag.answering import Answer
    from rag.citations import Citation

    def cite(marker, supported, inferred=False):
        return Citation(marker=marker, passage=marker - 1, doc_id="d", title="t", page=1,
                        page_end=1, sentence="s", sentence_start=0, sentence_end=1,
                        supported=supported, score=0.5, lexical=0.5, cosine=0.5, span_start=0,
                        span_end=1, quote="q", inferred=inferred)

    sources = [passage("one"), passage("two")]
    answered = Answer("q", "A [1]. B [2].", [cite(1, True), cite(2, False), cite(1, True, True)],
                      sources, generation_tps=10.0, raw_text="A [1]. B [2][5]. C.")
    refusal = Answer("q", "no", [], [], refused=True, raw_text="no")
    results = iter([answered, refusal])
    report = evaluate_answers([Question("1", "a", "en", ())] * 2, lambda q: next(results))
    assert report["refusal_rate"] == 0.5 and report["markers"] == 3
    assert report["valid_marker_share"] == pytest.approx(2 / 3)
    assert report["supported_share"] == pytest.approx(2 / 3)
    assert report["inferred_share"] == pytest.approx(1 / 3) and report["tokens_per_s"] == 10.0


def run_eval(pack_paths, docs, rows, tmp_path, *options):
    """`rag eval` over `docs` with question `rows`: (click result, JSON report, its path)."""
    from rag.cli import main

    questions = tmp_path / "q.jsonl"
    questions.write_text("\n".join(json.dumps(r) for r in rows))
    out = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["eval", "--docs", str(docs), "--questions", str(questions),
                                       "--out", str(out), "--embedder", str(pack_paths.embedder),
                                       *options])
    assert result.exit_code == 0, result.output
    return result, json.loads(out.read_text()), out


@pytest.mark.slow
def test_eval_command_end_to_end(pack_paths, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "valves.txt").write_text("The XK-4471 relief valve is serviced every nine hundred "
                                     "operating hours.\n\nIt was designed in Rotterdam.")
    (docs / "cats.txt").write_text("The feline dozed all afternoon on the woollen carpet.")
    rows = [{"id": "1", "question": "How often is the XK-4471 valve serviced?", "lang": "en",
             "evidence": [{"doc": "valves.txt", "text": "serviced every nine hundred operating"
                                                        " hours"}]},
            {"id": "2", "question": "Where did the cat sleep?", "lang": "en",
             "evidence": [{"doc": "cats.txt", "text": "The feline dozed"}]}]
    result, report, out = run_eval(pack_paths, docs, rows, tmp_path)
    assert report["hit@1"] == 1.0 and report["n"] == 2 and report["documents"] == 2
    assert {"hit@5", "hit@10", "mrr@10", "by_lang", "ingest_seconds",
            "query_seconds"} <= set(report)
    assert report["doc_hit@1"] == 1.0 and [q["doc_rank"] for q in report["questions"]] == [1, 1]
    assert "doc_hit@1=1.000" in result.output
    assert out.with_suffix(".png").stat().st_size > 1000
    # Under opaque names the gold documents are still recognised (through the mapping).
    (tmp_path / "opaque").mkdir()
    result, report, _ = run_eval(pack_paths, docs, rows, tmp_path / "opaque", "--opaque-names")
    assert report["opaque_names"] and report["doc_hit@1"] == 1.0 and report["hit@1"] == 1.0


@pytest.mark.slow
def test_eval_command_reports_follow_ups_per_kind(pack_paths, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "valves.txt").write_text("The XK-4471 relief valve is serviced every nine hundred "
                                     "operating hours.\n\nThe sample size of the valve study "
                                     "was 120 valves.")
    (docs / "cats.txt").write_text("The feline dozed all afternoon on the woollen carpet.\n\n"
                                   "The sample size of the cat study was 85 cats.")
    earlier = [{"role": "user", "content": "How often is the XK-4471 valve serviced?"},
               {"role": "assistant", "content": "Every nine hundred operating hours."}]
    rows = [{"id": "1", "question": "What was the sample size of the study?", "kind": "same",
             "history": earlier, "evidence": [{"doc": "valves.txt", "text": "120 valves"}]},
            {"id": "2", "question": "Where did the cat sleep?", "kind": "switch",
             "history": earlier, "evidence": [{"doc": "cats.txt", "text": "The feline dozed"}]}]
    result, report, out = run_eval(pack_paths, docs, rows, tmp_path)
    assert set(report["by_kind"]) == {"same", "switch"}
    for kind in ("same", "switch"):
        both = report["by_kind"][kind]
        assert both["history"]["n"] == both["alone"]["n"] == 1
        assert {"hit@1", "hit@5", "hit@10", "mrr@10"} <= set(both["history"]) & set(both["alone"])
        assert f"{kind}  n=1     with history: hit@1=" in result.output
        assert "| alone: hit@1=" in result.output
    # (Whether history helps is tests/test_history.py's business: two one-chunk documents
    # are too few for it.) A change of subject is still answered.
    assert report["by_kind"]["switch"]["history"]["hit@1"] == 1.0
    first = report["questions"][0]
    assert "rank_alone" in first and len(first["turn_docs"]) == 1 and first["turn_docs"][0]


@pytest.mark.slow
def test_eval_on_shared_xquad_sample(eval_dir, pack_paths, tmp_path):
    from rag.cli import main

    base = eval_dir / "xquad" / "zh"
    out = tmp_path / "zh.json"
    result = CliRunner().invoke(main, ["eval", "--docs", str(base / "docs"), "--questions",
                                       str(base / "dev.jsonl"), "--limit", "40", "--out",
                                       str(out), "--embedder", str(pack_paths.embedder)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n"] == 40 and report["documents"] == 48
    assert report["hit@5"] >= 0.7
