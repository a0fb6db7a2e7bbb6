"""The OpenAI chat-completions wire protocol, as the remote engine (rag/remote.py) speaks it.

`ChatClient` is one endpoint (a base URL such as "http://gpu-box:8080/v1") over
one `httpx.AsyncClient`: `models()` asks `GET {url}/models` which models it
serves, and `chat()` posts one `POST {url}/chat/completions` with
`stream: true` and reads the answer back into a `ChatAnswer`, whether it comes
as server-sent events or (from an endpoint that ignores `stream`) as one JSON
object. Each piece of text goes to `ChatAnswer.on_text` as it arrives.

Every way a request can fail becomes one line of words: a non-2xx answer is
its status and the message in its body (`error_message`, which knows the
OpenAI, mlx_lm.server and FastAPI shapes), a malformed or truncated stream is
`RequestFailed`, and `ChatClient.reason()` says what an httpx exception means
("cannot connect (Connection refused)", "no data for 120 s").

This module knows nothing of threads, queues or limits: scheduling requests,
cancelling them and reporting their end is the engine's work (rag/remote.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from rag.prompt import SYSTEM_PROMPT
from rag.streams import GenRequest

DEFAULT_MODEL = "default_model"  # mlx_lm.server's name for the model it was started with
ERROR_BODY_LIMIT = 64 * 1024  # bytes of an error answer read for its message
JSON_BODY_LIMIT = 16 * 1024 * 1024  # an endpoint that ignores stream: true answers in one JSON


def chat_messages(user: str, system: str = SYSTEM_PROMPT) -> tuple[dict, ...]:
    """GenRequest.messages for a prompt: the system message, then `prompt.user`."""
    return ({"role": "system", "content": system}, {"role": "user", "content": user})


def chat_body(model: str, request: GenRequest) -> dict[str, Any]:
    """The JSON body of the streaming chat request for `request`."""
    return {"model": model, "messages": list(request.messages),
            "max_tokens": request.max_tokens, "temperature": request.temperature,
            "stream": True, "stream_options": {"include_usage": True}}


class RequestFailed(Exception):
    """A request failed: `str()` is the reason, `url` what was asked (default: the chat URL)."""

    def __init__(self, reason: str, url: str = ""):
        super().__init__(reason)
        self.url = url


@dataclass(eq=False)
class ChatAnswer:
    """One answer as it arrives: `on_text` gets each piece of text, and the rest
    records what the endpoint said about the answer and when."""

    on_text: Callable[[str], None]
    finish: str | None = None  # the endpoint's finish_reason
    usage: dict = field(default_factory=dict)  # its token counts, when it sends them
    text_chunks: int = 0
    sent_at: float = 0.0  # time.monotonic() when the request went out
    first_at: float = 0.0  # ... and when the first text came back

    def text(self, text: str) -> None:
        if not self.first_at:
            self.first_at = time.monotonic()
        self.text_chunks += 1
        self.on_text(text)


class ChatClient:
    """An OpenAI-compatible endpoint at `url`, with at most `connections` open at once."""

    def __init__(self, url: str, *, api_key: str, connections: int,
                 connect_timeout: float, read_timeout: float):
        self.url = url
        self.chat_url = url + "/chat/completions"
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        headers = {"Accept": "text/event-stream, application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.AsyncClient(
            headers=headers, follow_redirects=True,
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout,
                                  write=connect_timeout, pool=connect_timeout),
            limits=httpx.Limits(max_connections=connections + 1,
                                max_keepalive_connections=connections))

    async def aclose(self) -> None:
        await self._client.aclose()

    def reason(self, exc: BaseException) -> str:
        """What `exc`, raised while talking to the endpoint, means, on one line."""
        if isinstance(exc, httpx.ConnectTimeout):
            return f"no connection within {self.connect_timeout:g} s"
        if isinstance(exc, httpx.ReadTimeout):
            return f"no data for {self.read_timeout:g} s"
        if isinstance(exc, httpx.PoolTimeout):
            return f"no free connection within {self.connect_timeout:g} s"
        if isinstance(exc, httpx.TimeoutException):
            return f"timed out ({one_line(exc)})"
        if isinstance(exc, httpx.ConnectError):
            return f"cannot connect ({root_cause(exc)})"
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return f"connection lost mid-answer ({one_line(exc)})"
        if isinstance(exc, httpx.HTTPError):
            return f"{type(exc).__name__} ({one_line(exc)})"
        return f"{type(exc).__name__}: {one_line(exc)}"

    async def models(self) -> list[str]:
        """The ids GET {url}/models lists: [] when it lists none or answers otherwise;
        RequestFailed when no answer comes."""
        url = self.url + "/models"
        try:
            response = await self._client.get(url)
        except httpx.HTTPError as exc:
            raise RequestFailed(self.reason(exc), url) from exc
        if not response.is_success:
            return []
        try:
            data = response.json().get("data")
            return [m["id"] for m in data if isinstance(m.get("id"), str)]
        except (ValueError, AttributeError, TypeError, KeyError):
            return []

    async def chat(self, model: str, request: GenRequest, answer: ChatAnswer) -> None:
        """Ask `model` for the answer to `request` and read it into `answer`; return
        once it is complete, else raise (RequestFailed, an httpx error)."""
        body = chat_body(model, request)
        answer.sent_at = time.monotonic()
        async with self._client.stream("POST", self.chat_url, json=body) as response:
            if not response.is_success:
                raise RequestFailed(await http_error(response))
            kind = response.headers.get("content-type", "text/event-stream").lower()
            if "event-stream" in kind:
                await read_events(answer, response)
            elif "json" in kind:
                await read_json(answer, response)
            else:
                raise RequestFailed(f"unexpected answer of type {kind!r} (not an event stream)")


# ---------------------------------------------------------------------------
# Reading an answer


async def http_error(response: httpx.Response) -> str:
    """A non-2xx answer on one line: its status and the message in its body."""
    data = b""
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= ERROR_BODY_LIMIT:
                break
    except httpx.HTTPError:
        pass
    message = error_message(data)
    status = f"HTTP {response.status_code} {response.reason_phrase}".strip()
    return f"{status} ({message})" if message else status


async def read_events(answer: ChatAnswer, response: httpx.Response) -> None:
    """Read a server-sent event stream into `answer`, to its end."""
    data: list[str] = []
    try:
        async for line in response.aiter_lines():
            if line == "":
                if data and read_event(answer, "\n".join(data)):
                    return
                data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # other fields ("event:", "id:") and comments (": keepalive") are skipped
    except httpx.ReadTimeout:
        if answer.finish is None:
            raise
        return  # the answer was complete; only the usage or [DONE] did not come
    if data and read_event(answer, "\n".join(data)):
        return
    if answer.finish is None:
        raise RequestFailed("the stream ended before the answer did (the endpoint closed it)")


def read_event(answer: ChatAnswer, payload: str) -> bool:
    """Handle one event's data; True at the end of the stream."""
    if payload.strip() == "[DONE]":
        if answer.finish is None:
            answer.finish = "stop"
        return True
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise RequestFailed(f"malformed stream (not JSON: {one_line(payload, 80)!r})") from None
    if not isinstance(chunk, dict):
        raise RequestFailed(f"malformed stream (not an object: {one_line(payload, 80)!r})")
    if chunk.get("error"):
        raise RequestFailed(f"error in stream ({error_message(chunk) or 'no message'})")
    if isinstance(chunk.get("usage"), dict):
        answer.usage = chunk["usage"]
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise RequestFailed(f"malformed stream (choices: {one_line(choices, 80)!r})")
    for choice in choices[:1]:
        if not isinstance(choice, dict):
            raise RequestFailed(f"malformed stream (choice: {one_line(choice, 80)!r})")
        delta = choice.get("delta") or choice.get("message") or {}
        text = delta.get("content") if isinstance(delta, dict) else None
        if text is None and isinstance(choice.get("text"), str):
            text = choice["text"]  # a completions-style chunk
        if text is not None and not isinstance(text, str):
            raise RequestFailed(f"malformed stream (content: {one_line(text, 80)!r})")
        if text:
            answer.text(text)
        if choice.get("finish_reason"):
            answer.finish = str(choice["finish_reason"])
    return False


async def read_json(answer: ChatAnswer, response: httpx.Response) -> None:
    """An endpoint that ignored stream: true: the whole answer in one JSON object."""
    data = b""
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > JSON_BODY_LIMIT:
            raise RequestFailed(f"answer larger than {JSON_BODY_LIMIT} bytes")
    try:
        body = json.loads(data)
        choice = body["choices"][0]
        text = (choice.get("message") or {}).get("content") or choice.get("text") or ""
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        raise RequestFailed(f"malformed answer ({one_line(data[:80], 80)!r})") from None
    if isinstance(body.get("usage"), dict):
        answer.usage = body["usage"]
    if text:
        answer.text(str(text))
    answer.finish = str(choice.get("finish_reason") or "stop")


# ---------------------------------------------------------------------------
# Errors in words


def one_line(value: Any, limit: int = 300) -> str:
    """`value` as text on one line of at most `limit` characters."""
    text = " ".join(str(value).split()) or type(value).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def root_cause(exc: BaseException) -> str:
    """The innermost OS error behind `exc` in words ("Connection refused" rather than
    httpx's "All connection attempts failed"), else `exc` on one line."""
    found = ""
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.strerror:
            errno = current.errno or 0
            found = os.strerror(errno) if errno > 0 else current.strerror
        current = current.__cause__ or current.__context__
    return found or one_line(exc)


def error_message(body: bytes | str | dict) -> str:
    """The message in an endpoint's error answer (OpenAI, mlx_lm.server, FastAPI shapes)."""
    data: Any = body
    if isinstance(body, (bytes, str)):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            data = json.loads(text)
        except ValueError:
            return one_line(text, 200) if text.strip() else ""
    for key in ("error", "detail", "message"):
        if isinstance(data, dict) and key in data:
            value = data[key]
            if isinstance(value, dict):
                value = value.get("message") or value.get("detail") or value
            return one_line(value if isinstance(value, str) else json.dumps(value), 200)
    return one_line(json.dumps(data), 200)
