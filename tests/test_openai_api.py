"""The OpenAI-compatible API (/v1) through the official `openai` client, against a real
`rag serve --offline` over the demo corpus, started with an API key."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.test_browser import ingest_corpus, run_server

KEY = "sesame-v1"
QUESTION = "When was the Aurora observatory completed?"


@pytest.fixture(scope="module")
def server(pack_config, tmp_path_factory):
    """One server for the module (keyed), over the demo corpus."""
    folder = tmp_path_factory.mktemp("openai")
    ingest_corpus(pack_config, folder / "db")
    yield from run_server(pack_config, folder, key=KEY)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def model(client):
    return client.models.list().data[0].id


def health(url: str) -> dict:
    request = urllib.request.Request(url + "/health", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def cited_files(extra: dict) -> set[str]:
    """The files of the sources that supported citations point at."""
    sources = {s["marker"]: s for s in extra["sources"]}
    return {sources[c["marker"]]["path"].rsplit("/", 1)[-1]
            for c in extra["citations"] if c["supported"]}


def check_extra(text: str, extra: dict) -> None:
    assert {"citations", "sources", "sentences", "support", "refused", "finish",
            "notice"} <= set(extra)
    assert [s["marker"] for s in extra["sources"]] == list(range(1, len(extra["sources"]) + 1))
    for citation in extra["citations"]:
        # The model's markers stay in the text; the checker's own (inferred) have none.
        assert citation["inferred"] or f"[{citation['marker']}]" in text
        assert 0 <= citation["sentence_start"] < citation["sentence_end"] <= len(text)
        source = extra["sources"][citation["marker"] - 1]
        assert citation["doc"] == source["doc"]


# -- without models: the request's parts -------------------------------------------
def test_messages_become_a_question_and_its_history():
    from rag import Turn
    from web.openai_api import conversation

    question, history = conversation([
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": "When was it built?"},
        {"role": "assistant", "content": "In 1987 [1]."},
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Who"},
                                     {"type": "text", "text": "chose the site?"}]}])
    assert question == "Who\nchose the site?"
    assert history == [Turn(question="When was it built?", answer="In 1987 [1].")]
    _, lone = conversation([{"role": "assistant", "content": "Hello."},
                            {"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert lone == [Turn(question="", answer="Hello."), Turn(question="a")]


def test_what_cannot_be_honoured_is_refused_by_name():
    from web.openai_api import OpenAIError, check_parameters, conversation, max_tokens

    check_parameters({"n": 1, "top_p": 1, "user": "u", "seed": 3, "tools": None, "stop": []})
    for body, param in [({"n": 2}, "n"), ({"tools": [{"type": "function"}]}, "tools"),
                        ({"logprobs": True}, "logprobs"), ({"audio": {}}, "audio"),
                        ({"response_format": {"type": "json_object"}}, "response_format"),
                        ({"top_k": 5}, "top_k")]:
        with pytest.raises(OpenAIError) as refused:
            check_parameters(body)
        assert refused.value.status_code == 400 and refused.value.param == param
    for messages in ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
                     [{"role": "tool", "content": "x"}],
                     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                     []):
        with pytest.raises(OpenAIError):
            conversation(messages)
    assert max_tokens({"max_tokens": 5000}, 512) == 512  # the server's bound holds
    assert max_tokens({"max_completion_tokens": 40, "max_tokens": 90}, 512) == 40


# -- a real server ------------------------------------------------------------------
@pytest.mark.slow
def test_models_lists_the_configured_generator(client, server, model):
    listed = client.models.list().data
    assert [m.id for m in listed] == [health(server)["models"]["generator"]]
    assert listed[0].object == "model" and client.models.retrieve(model).id == model


@pytest.mark.slow
def test_a_completion_cites_the_document_that_answers(client, model):
    response = client.chat.completions.create(
        model=model, max_tokens=60, user="someone",
        messages=[{"role": "system", "content": "You are a helpful assistant."},
                  {"role": "user", "content": QUESTION}])
    assert response.id.startswith("chatcmpl-") and response.object == "chat.completion"
    assert response.model == model
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    extra = response.model_extra
    check_extra(choice.message.content, extra)
    assert extra["refused"] is False and extra["sources"]
    assert cited_files(extra) == {"aurora-observatory.pdf"}


@pytest.mark.slow
def test_a_streamed_completion_ends_with_citations_and_usage(client, model):
    chunks = list(client.chat.completions.create(
        model=model, max_completion_tokens=60, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    last = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(last) == 1 and last[0].choices[0].finish_reason in ("stop", "length")
    extra = last[0].model_extra
    check_extra(extra["answer"], extra)
    assert cited_files(extra) == {"aurora-observatory.pdf"}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


@pytest.mark.slow
def test_a_follow_up_carries_the_conversation(client, model):
    response = client.chat.completions.create(model=model, max_tokens=40, messages=[
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": "It was completed in 1987 [1]."},
        {"role": "user", "content": "Who chose the site of the Aurora observatory?"}])
    assert response.choices[0].message.content.strip()
    check_extra(response.choices[0].message.content, response.model_extra)


@pytest.mark.slow
def test_unsupported_requests_are_openai_errors(client, model):
    import openai

    question = [{"role": "user", "content": QUESTION}]
    for options, param in [({"n": 2}, "n"),
                           ({"tools": [{"type": "function", "function": {"name": "f"}}]},
                            "tools")]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=model, messages=question, **options)
        error = refused.value.response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error" and error["param"] == param
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}])
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-4o", messages=question)
    assert missing.value.code == "model_not_found"


@pytest.mark.slow
def test_a_wrong_key_is_refused(server):
    import openai

    wrong = openai.OpenAI(base_url=server + "/v1", api_key="not-the-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as refused:
        wrong.models.list()
    assert refused.value.response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="any", messages=[{"role": "user", "content": "q"}])


@pytest.mark.slow
def test_a_client_that_leaves_a_stream_frees_its_place(client, server, model):
    stream = client.chat.completions.create(
        model=model, stream=True, messages=[{"role": "user", "content":
                                             "Tell me everything about the Aurora observatory."}])
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    stream.close()
    deadline = time.monotonic() + 120  # a hang guard, not a speed bound
    while True:
        state = health(server)
        if state["questions"] == 0 and state["engine"]["running"] == 0:
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
