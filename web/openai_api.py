"""The OpenAI-compatible API: `POST /v1/chat/completions` (JSON or streamed) and `GET /v1/models`.

An OpenAI client pointed at `http://host:port/v1` asks the documents: the last
`user` message is the question, the earlier user/assistant messages are the
conversation's history (`rag.Turn`s), and the answer goes through the same
admission, retrieval, prompt, engine and citation checks as `/api/ask`
(web/asking.py). The answer text keeps its `[n]` markers; the checked citations,
sources and per-sentence support ride along as extra top-level fields (on the
last chunk of a stream), so a plain client reads a normal answer and a
citation-aware one gets everything. Decisions, documented in the README
("OpenAI-compatible API"):

- `system` and `developer` messages are accepted and ignored: the pinned grounding
  prompt (rag/prompt.py) stays the only instruction, and a client's generic
  "You are a helpful assistant" would otherwise be searched as part of the question.
- `model` must name the served generator (`GET /v1/models`) or the `generator`
  setting as configured; any other name is 404 `model_not_found`, so a client
  that thinks it talks to another model finds out at once.
- A parameter the service cannot honour is 400 (`unsupported_parameter`, or
  `unsupported_value` for `n`, `top_p`, `tools`, ... at anything but the value that
  asks for nothing); an unknown one is 400 too, as OpenAI answers.

Errors on /v1 are OpenAI's shape: {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from litestar import Request, Response, Router, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from web.asking import (
    MAX_JSON,
    MAX_QUESTION,
    EventStream,
    admitted_run,
    cancel_on_disconnect,
    read_json,
    short_error,
)
from web.requests import request_id

log = logging.getLogger("web")
OWNER = "rag-local"
STARTED = int(time.time())  # the models' `created`: when this server started

HONOURED = frozenset({"model", "messages", "stream", "stream_options", "max_tokens",
                      "max_completion_tokens", "temperature"})
# Accepted and ignored: nothing an answer from the documents depends on.
IGNORED = frozenset({"user", "seed", "metadata", "store", "service_tier",
                     "parallel_tool_calls", "prompt_cache_key", "safety_identifier"})
# Accepted only at the value that asks for nothing (what many clients send by default).
NEUTRAL: dict[str, tuple] = {
    "n": (1,), "top_p": (1,), "frequency_penalty": (0,), "presence_penalty": (0,),
    "logprobs": (False,), "top_logprobs": (0,), "stop": ([], ""), "logit_bias": ({},),
    "tools": ([],), "functions": ([],), "tool_choice": ("none",), "function_call": ("none",),
    "modalities": (["text"],), "response_format": ({"type": "text"},)}
# OpenAI parameters this service never honours, at any value.
UNSUPPORTED = frozenset({"audio", "prediction", "web_search_options", "reasoning_effort",
                         "verbosity"})
# The Answer's fields (rag/answering.py: Answer.to_json) every response carries.
EXTRA = ("citations", "sources", "sentences", "support", "refused", "finish", "notice")
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class OpenAIError(HTTPException):
    """An error as OpenAI's API words it: `param` names the field at fault, `code` says why."""

    def __init__(self, status: int, message: str, *, param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(status_code=status, detail=message, headers=headers)
        self.param, self.code = param, code


def invalid(message: str, param: str | None = None, code: str | None = "invalid_value"
            ) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def error_json(status: int, message: str, param: str | None = None,
               code: str | None = None) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def openai_error(request: Request, exc: HTTPException) -> Response:
    """Every HTTP error under /v1 (guards, limits, busy, validation) in OpenAI's shape."""
    status, message = exc.status_code, exc.detail or "error"
    code = getattr(exc, "code", None)
    if status == 401:
        code = code or "invalid_api_key"
    elif status == 413:
        message = f"request body too large (at most {MAX_JSON} bytes)"
    log.log(logging.ERROR if status >= 500 else logging.INFO, "%s %s -> %d %s [request %s]",
            request.method, request.url.path, status, message, request_id(request))
    return Response(error_json(status, message, getattr(exc, "param", None), code),
                    status_code=status, headers=getattr(exc, "headers", None))


# -- the request ---------------------------------------------------------------
@dataclass
class Chat:
    """A validated chat request: what to ask, how, and how to answer."""

    model: str
    question: str
    history: list = field(default_factory=list)  # rag.Turn, oldest first
    max_tokens: int | None = None
    temperature: float | None = None
    stream: bool = False
    include_usage: bool = False
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))


def model_names(runtime) -> tuple[str, list[str]]:
    """(the served generator's name, every name a request may use for it)."""
    name = runtime.engine().name
    return name, [name, runtime.config.generator]


def parse_chat(data: Any, runtime) -> Chat:
    if not isinstance(data, dict):
        raise invalid("the body must be a JSON object", code="invalid_type")
    check_parameters(data)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("model: required, the name GET /v1/models lists", "model",
                      "missing_required_parameter")
    served, names = model_names(runtime)
    if model not in names:
        raise OpenAIError(404, f"The model `{model}` does not exist: this server answers with"
                          f" `{served}` (GET /v1/models)", param="model", code="model_not_found")
    question, history = conversation(data.get("messages"))
    stream = data.get("stream") or False
    if not isinstance(stream, bool):
        raise invalid("stream: true or false", "stream", "invalid_type")
    options = data.get("stream_options")
    if options is not None and not stream:
        raise invalid("stream_options: only allowed when stream is true", "stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("stream_options: an object", "stream_options", "invalid_type")
    return Chat(model=served, question=question, history=history,
                max_tokens=max_tokens(data, runtime.config.max_tokens),
                temperature=temperature(data.get("temperature")), stream=stream,
                include_usage=bool((options or {}).get("include_usage")))


def check_parameters(data: dict) -> None:
    """400 for what cannot be honoured; a null value counts as left out."""
    for name, value in data.items():
        if value is None or name in HONOURED or name in IGNORED:
            continue
        if name in NEUTRAL:
            if value not in NEUTRAL[name]:
                raise invalid(f"{name}: not supported by this server (it answers once, as"
                              " text, from your documents); leave it out or send"
                              f" {json.dumps(NEUTRAL[name][0])}", name, "unsupported_value")
        elif name in UNSUPPORTED:
            raise invalid(f"{name}: not supported by this server", name, "unsupported_parameter")
        else:
            raise invalid(f"Unrecognized request argument supplied: {name}", name,
                          "unknown_parameter")


def max_tokens(data: dict, limit: int) -> int | None:
    """The request's bound on generated tokens, never past the server's `max_tokens`."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise invalid(f"{name}: a positive integer", name)
        return min(value, limit)
    return None


def temperature(value: Any) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 2:
        raise invalid("temperature: a number from 0 to 2", "temperature")
    return float(value)


def conversation(messages: Any) -> tuple[str, list]:
    """(question, history): the last user message and the user/assistant turns before it;
    system and developer messages are ignored (the module doc says why)."""
    if not isinstance(messages, list) or not messages:
        raise invalid("messages: required, a non-empty list", "messages",
                      "missing_required_parameter")
    said: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"{where}: an object with role and content", where, "invalid_type")
        role = message.get("role")
        if role in ("system", "developer"):
            continue
        if role not in ("user", "assistant"):
            raise invalid(f"{where}.role: {role!r} is not supported (user, assistant, system,"
                          " developer)", f"{where}.role", "unsupported_value")
        said.append((role, content_text(message.get("content"), f"{where}.content", role)))
    if not said or said[-1][0] != "user":
        raise invalid("messages: the last one (system messages aside) must be the user's"
                      " question", "messages")
    question = said[-1][1].strip()
    if not question:
        raise invalid("messages: the question (the last user message) is empty", "messages")
    if len(question) > MAX_QUESTION:
        raise invalid(f"messages: the question is longer than {MAX_QUESTION} characters",
                      "messages", "context_length_exceeded")
    return question, turns(said[:-1])


def content_text(content: Any, where: str, role: str) -> str:
    """A message's text: a string, or a list of text parts (joined by newlines)."""
    if isinstance(content, str):
        return content
    if content is None and role == "assistant":  # e.g. an earlier tool-call message
        return ""
    if not isinstance(content, list):
        raise invalid(f"{where}: a string or a list of text parts", where, "invalid_type")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind != "text" or not isinstance(part.get("text"), str):
            raise invalid(f"{where}[{j}]: only text parts are supported, not {kind!r}",
                          f"{where}[{j}].type", "unsupported_value")
        texts.append(part["text"])
    return "\n".join(texts)


def turns(said: list[tuple[str, str]]) -> list:
    """User/assistant messages as rag.Turns: each question with the answer after it."""
    from rag import Turn

    out: list = []
    for role, text in said:
        if role == "user":
            out.append(Turn(question=text))
        elif out and not out[-1].answer:
            out[-1] = Turn(question=out[-1].question, answer=text)
        else:  # an answer without its question (two in a row, or the first message)
            out.append(Turn(question="", answer=text))
    return out


# -- the response --------------------------------------------------------------
def finish_reason(finish: str) -> str:
    """OpenAI's reason for the Answer's `finish`: the time limit cut the text short like
    max_tokens does; a stopped repetition ("loop") or a refusal ended it on purpose."""
    return "length" if finish in ("length", "timeout") else "stop"


def usage(answer) -> dict:
    return {"prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.generation_tokens,
            "total_tokens": answer.prompt_tokens + answer.generation_tokens,
            "prompt_tokens_details": {"cached_tokens": answer.cached_tokens}}


def extra(answer) -> dict:
    data = answer.to_json()
    return {name: data[name] for name in EXTRA}


def completion(chat: Chat, answer) -> dict:
    message = {"role": "assistant", "content": answer.text, "refusal": None}
    return {"id": chat.id, "object": "chat.completion", "created": chat.created,
            "model": chat.model,
            "choices": [{"index": 0, "message": message, "logprobs": None,
                         "finish_reason": finish_reason(answer.finish)}],
            "usage": usage(answer), **extra(answer)}


def chunk(chat: Chat, delta: dict | None, reason: str | None = None, **fields: Any) -> str:
    """One `chat.completion.chunk` (no choices when `delta` is None: the usage chunk)."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": reason}]
    body = {"id": chat.id, "object": "chat.completion.chunk", "created": chat.created,
            "model": chat.model, "choices": choices}
    if chat.include_usage:
        body["usage"] = None
    return json.dumps({**body, **fields})


def stream(chat: Chat, run, admission) -> EventStream:
    """Server-sent chunks: the role, the tokens as they come, a last chunk with the finish
    reason and the extra fields (plus `answer`, the cleaned text that `sentences` index),
    the usage chunk when asked for, then [DONE]. A failure mid-answer is an error chunk."""
    async def lines():
        from rag import DoneEvent, TokenEvent

        try:
            yield chunk(chat, {"role": "assistant", "content": ""})
            async with aclosing(run.aevents()) as events:  # leaving early cancels it
                async for event in events:
                    if isinstance(event, TokenEvent):
                        yield chunk(chat, {"content": event.text})
                    elif isinstance(event, DoneEvent):
                        answer = event.answer
            yield chunk(chat, {}, finish_reason(answer.finish), answer=answer.text,
                        **extra(answer))
            if chat.include_usage:
                yield chunk(chat, None, usage=usage(answer))
            yield "[DONE]"
        except Exception as exc:  # noqa: BLE001 - reported to the client as an error chunk
            log.warning("answer failed: %s", short_error(exc))
            yield json.dumps(error_json(502, short_error(exc)))
        finally:  # also when the client leaves
            admission.leave()

    return EventStream(lines(), headers=SSE_HEADERS)  # each string: one "data:" event


# -- routes ----------------------------------------------------------------------
@post("/chat/completions", status_code=200, request_max_body_size=MAX_JSON)
async def chat_completions(request: Request, state: State) -> Any:
    """Answer the last user message from the documents, as OpenAI's chat completions do,
    with the checked `citations`, `sources`, `sentences`, `support`, `refused`, `finish`
    and `notice` as extra fields (README: "OpenAI-compatible API")."""
    from rag import DoneEvent, EngineError

    chat = parse_chat(await read_json(request), state.runtime)
    run, admission = await admitted_run(state, chat.question, max_tokens=chat.max_tokens,
                                        temperature=chat.temperature, history=chat.history)
    if chat.stream:
        return stream(chat, run, admission)  # the stream leaves when it ends
    watch = asyncio.create_task(cancel_on_disconnect(request, run))
    try:
        done = [e async for e in run.aevents() if isinstance(e, DoneEvent)]
    except EngineError as exc:
        raise OpenAIError(502, short_error(exc)) from exc
    finally:
        watch.cancel()
        admission.leave()
    return completion(chat, done[-1].answer)


def model_json(name: str) -> dict:
    return {"id": name, "object": "model", "created": STARTED, "owned_by": OWNER}


@get("/models")
async def list_models(state: State) -> dict:
    """The one model this server answers with: its generator."""
    served, _ = model_names(state.runtime)
    return {"object": "list", "data": [model_json(served)]}


@get("/models/{model:path}")
async def get_model(state: State, model: str) -> dict:
    names = model_names(state.runtime)[1]
    model = model if model in names else model.lstrip("/")  # ids may hold "/" (hub names)
    if model not in names:
        raise OpenAIError(404, f"The model `{model}` does not exist", param="model",
                          code="model_not_found")
    return model_json(model)


def openai_router(guards: list) -> Router:
    return Router(path="/v1", guards=guards, route_handlers=[
        chat_completions, list_models, get_model],
        exception_handlers={HTTPException: openai_error})
