"""`rag bench serve`, the HTTP side: streamed requests to the rag server
(`POST /api/ask`) and to `mlx_lm.server` (`/v1/completions`), a round of concurrent
streams started at the same moment, and the baseline `mlx_lm.server` process (a free
loopback port, the wait for its health, its shutdown). What is measured, and how, is
in the doc of `rag.cli.bench.serve`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rag.cli.bench.serve_measure import (
    SSEParser,
    StreamResult,
    json_object,
    openai_event,
    rag_event,
)


# -- a round of concurrent streams ---------------------------------------------------
def _connection(url: str, timeout: float) -> tuple[http.client.HTTPConnection, str]:
    parts = urllib.parse.urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    return kind(parts.hostname, parts.port, timeout=timeout), parts.path or "/"


def stream_request(url: str, body: dict, apply: Callable, result: StreamResult, *,
                   key: str = "", timeout: float = 600.0,
                   barrier: threading.Barrier | None = None) -> StreamResult:
    """POST `body` to `url`, read the event stream, `apply` each message to `result`."""
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    raw = json.dumps(body).encode()
    if barrier is not None:  # every stream of the round starts at the same moment
        try:
            barrier.wait()
        except threading.BrokenBarrierError as exc:
            result.error = f"BrokenBarrierError: {exc}"
            return result
    try:
        conn, path = _connection(url, timeout)
    except (ValueError, OSError) as exc:
        result.error = f"bad url {url}: {exc}"
        return result
    try:
        result.start = time.perf_counter()
        conn.request("POST", path, raw, headers)
        response = conn.getresponse()
        result.status = response.status
        if response.status != 200:
            result.error = response.read(300).decode(errors="replace") or response.reason
            result.end = time.perf_counter()
            return result
        parser = SSEParser()
        while line := response.readline():
            message = parser.feed(line.decode("utf-8", errors="replace"))
            if message:
                apply(result, *message, time.perf_counter())
        if message := parser.close():
            apply(result, *message, time.perf_counter())
        result.end = time.perf_counter()
        if not result.done and not result.error:
            result.error = "stream ended early"
    except (OSError, http.client.HTTPException) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
        result.end = time.perf_counter()
    finally:
        conn.close()
    return result


def run_round(jobs: Sequence[tuple[str, dict, Callable, str]], *, key: str = "",
              timeout: float = 600.0) -> list[StreamResult]:
    """Start every (url, body, apply, question) stream at the same moment; wait for all."""
    barrier = threading.Barrier(len(jobs)) if jobs else None
    results = [StreamResult(question) for *_, question in jobs]
    threads = [threading.Thread(target=stream_request, args=(url, body, apply, result),
                                kwargs={"key": key, "timeout": timeout, "barrier": barrier},
                                daemon=True)
               for (url, body, apply, _), result in zip(jobs, results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results

# -- the baseline server -----------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlx_server_command(folder: str, port: int, concurrency: int) -> list[str]:
    return [sys.executable, "-c", "import rag; from mlx_lm.server import main; main()",
            "--model", folder, "--host", "127.0.0.1", "--port", str(port),
            "--decode-concurrency", str(concurrency),
            "--prompt-concurrency", str(concurrency), "--log-level", "WARNING"]


@contextlib.contextmanager
def mlx_server(folder: str, concurrency: int, *, startup: float = 300.0
               ) -> Iterator[tuple[str, list[str]]]:
    """Run mlx_lm.server on a free loopback port; yield (base URL, command line)."""
    port = free_port()
    command = mlx_server_command(folder, port, concurrency)
    log = tempfile.NamedTemporaryFile(prefix="mlx-server-", suffix=".log", delete=False)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, PYTHONUNBUFFERED="1"))
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited with {process.returncode}:\n"
                                   + _tail(log.name))
            if get_json(base + "/health", timeout=2)[0] == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlx_lm.server not healthy after {startup:.0f} s:\n"
                                   + _tail(log.name))
            time.sleep(0.5)
        yield base, command
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        with contextlib.suppress(OSError):
            os.unlink(log.name)


def _tail(path: str, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    return ""


def get_json(url: str, key: str = "", timeout: float = 10.0) -> tuple[int, dict]:
    try:
        conn, path = _connection(url, timeout)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        status, body = response.status, response.read()
        conn.close()
    except (OSError, http.client.HTTPException, ValueError):
        return 0, {}
    return status, json_object(body.decode(errors="replace"))


# -- the jobs of a round: (url, body, apply, question) -------------------------------
def rag_job(url: str, question: str) -> tuple[str, dict, Callable, str]:
    return url.rstrip("/") + "/api/ask", {"question": question, "stream": True}, rag_event, \
        question


def baseline_job(url: str, prompt: str, max_tokens: int, question: str
                 ) -> tuple[str, dict, Callable, str]:
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
            "stream_options": {"include_usage": True}}
    return url.rstrip("/") + "/v1/completions", body, openai_event, question
