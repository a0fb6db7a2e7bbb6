"""A small load test: concurrent questions and uploads against a running server.

    python -m rag.cli.bench.loadtest --url http://127.0.0.1:8000 [--key KEY] \
        [--asks 8] [--uploads 20] [--stream]

Sends `--asks` questions and `--uploads` uploads (small generated .txt/.md
files plus bad ones: random bytes named .pdf, an empty .txt, an .exe) all at
once, waits for every upload job to finish, then prints the outcomes and
whether /health still answers. With `--stream` the questions are asked as
server-sent events (`"stream": true`) and each one also reports its time to
first token and tokens generated; an ask succeeds when it answers 200 and its
stream ends with a `done` event. Every ask's total seconds are printed, then
the median and the max.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

QUESTIONS = ["When was the observatory completed?", "What does the handbook say about safety?",
             "Which lichens were recorded?", "What is the tide range?",
             "How long does the sourdough rise?", "Who wrote the annual report?",
             "What is the capital of Mars?", "Summarise the field notes."]


def request(url: str, key: str, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None, timeout: float = 600) -> tuple[int, bytes]:
    headers = dict(headers or {})
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError as exc:
        return 0, str(exc).encode()


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = secrets.token_hex(12)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\";"
            f" filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}"


def sample_files(n: int) -> list[tuple[str, bytes, str]]:
    """(name, bytes, expectation): about a third bad files, the rest small good notes."""
    out = []
    for i in range(n):
        kind = i % 6
        if kind == 3:
            out.append((f"noise{i}.pdf", os.urandom(4096), "bad"))
        elif kind == 4:
            out.append((f"empty{i}.txt", b"", "bad"))
        elif kind == 5:
            out.append((f"tool{i}.exe", b"MZ" + os.urandom(512), "bad"))
        else:
            ext = ".md" if i % 2 else ".txt"
            lines = [f"# Load note {i}" if ext == ".md" else f"Load note {i}", ""]
            lines += [f"Station {i} logged {i * 7 + 3} readings on day {d}; the sensor"
                      f" array number {i} reported calm winds." for d in range(1, 30)]
            out.append((f"note{i}{ext}", "\n".join(lines).encode(), "good"))
    return out


def ask(base: str, key: str, question: str, stream: bool = False) -> dict:
    if stream:
        return ask_stream(base, key, question)
    start = time.perf_counter()
    status, body = request(base + "/api/ask", key, "POST",
                           json.dumps({"question": question}).encode(),
                           {"Content-Type": "application/json"})
    out = {"question": question, "status": status, "seconds": time.perf_counter() - start}
    try:
        data = json.loads(body)
        out.update(refused=data.get("refused"), citations=len(data.get("citations", [])),
                   error=data.get("error"))
    except ValueError:
        out["error"] = body[:200].decode(errors="replace")
    out["ok"] = status == 200 and not out.get("error")
    return out


def ask_stream(base: str, key: str, question: str) -> dict:
    from rag.cli.bench.serve import StreamResult, rag_event, stream_request

    start = time.perf_counter()
    r = stream_request(base + "/api/ask", {"question": question, "stream": True}, rag_event,
                       StreamResult(question), key=key, timeout=600)
    return {"question": question, "status": r.status, "seconds": time.perf_counter() - start,
            "ttft": r.ttft, "tokens": r.tokens, "refused": r.refused,
            "citations": r.citations, "error": r.error, "ok": r.ok}


def upload(base: str, key: str, name: str, data: bytes, expect: str) -> dict:
    start = time.perf_counter()
    body, ctype = multipart(name, data)
    status, reply = request(base + "/api/documents", key, "POST", body, {"Content-Type": ctype})
    out = {"file": name, "expect": expect, "status": status,
           "upload_s": time.perf_counter() - start}
    try:
        job = json.loads(reply)["jobs"][0]
    except (ValueError, KeyError, IndexError):
        out["job"] = "none"
        out["error"] = reply[:200].decode(errors="replace")
        return out
    deadline = time.monotonic() + 900
    while job["status"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.5)
        status, reply = request(f"{base}/api/jobs/{job['id']}", key)
        if status == 200:
            job = json.loads(reply)
    out.update(job=job["status"], reason=job.get("reason", ""),
               doc_id=(job.get("result") or {}).get("doc_id", ""),
               total_s=time.perf_counter() - start)
    return out


def library(base: str, key: str) -> set[str]:
    status, body = request(base + "/api/documents", key, timeout=60)
    return {d["id"] for d in json.loads(body)["documents"]} if status == 200 else set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", default=os.environ.get("RAG_API_KEY", ""))
    parser.add_argument("--asks", type=int, default=8)
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--stream", action="store_true",
                        help="Ask with \"stream\": true (server-sent events).")
    args = parser.parse_args(argv)
    base = args.url.rstrip("/")

    status, body = request(base + "/health", args.key, timeout=10)
    print(f"health before: {status} {body[:200].decode(errors='replace')}")
    files = sample_files(args.uploads)
    before = library(base, args.key)
    start = time.perf_counter()
    healthy_during: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # /health latency while the load runs
        while not stop.is_set():
            t = time.perf_counter()
            s, _ = request(base + "/health", args.key, timeout=30)
            healthy_during.append(time.perf_counter() - t if s == 200 else float("inf"))
            stop.wait(1.0)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    with ThreadPoolExecutor(max_workers=args.asks + args.uploads) as pool:
        asks = [pool.submit(ask, base, args.key, QUESTIONS[i % len(QUESTIONS)], args.stream)
                for i in range(args.asks)]
        ups = [pool.submit(upload, base, args.key, *f) for f in files]
        ask_results = [f.result() for f in asks]
        up_results = [f.result() for f in ups]
    stop.set()
    prober.join(5)
    wall = time.perf_counter() - start

    print(f"\n{args.asks} questions and {args.uploads} uploads at once; wall {wall:.1f} s")
    print(f"asks{' (streamed)' if args.stream else ''}: statuses",
          dict(Counter(r["status"] for r in ask_results)),
          f"succeeded {sum(r['ok'] for r in ask_results)}/{len(ask_results)}")
    for r in ask_results:
        stream = (f"first token {r['ttft']:5.2f} s tokens={r['tokens']} "
                  if r.get("ttft") is not None else "")
        print(f"  {'ok  ' if r['ok'] else 'FAIL'} {r['status']} {r['seconds']:6.2f} s "
              f"{stream}refused={r.get('refused')} citations={r.get('citations')} "
              f"{r.get('error') or ''} | {r['question']}")
    secs = sorted(r["seconds"] for r in ask_results)
    if secs:
        print(f"  total time median {statistics.median(secs):.2f} s, max {secs[-1]:.2f} s")
    print("uploads: statuses", dict(Counter(r["status"] for r in up_results)),
          "jobs", dict(Counter(r.get("job") for r in up_results)))
    wrong = 0
    for r in up_results:
        ok = (r.get("job") == "done") == (r["expect"] == "good")
        wrong += not ok
        print(f"  {'ok ' if ok else 'BAD'} {r['file']:<14} http {r['status']} job={r.get('job')}"
              f" {r.get('total_s', 0):6.1f} s {r.get('reason') or r.get('error') or ''}")
    finite = sorted(s for s in healthy_during if s != float("inf"))
    print(f"/health during load: {len(finite)}/{len(healthy_during)} answered"
          + (f", p50 {statistics.median(finite) * 1000:.0f} ms, max {finite[-1] * 1000:.0f} ms"
             if finite else ""))
    accepted = {r["doc_id"] for r in up_results if r.get("job") == "done" and r.get("doc_id")}
    listed = library(base, args.key)
    missing = accepted - listed
    print(f"documents: {len(accepted)} accepted and stored, {len(listed)} listed"
          f" ({len(before)} before); accepted but not listed: {len(missing)};"
          f" listed = before + accepted: {listed == before | accepted}")
    wrong += len(missing) + (listed != before | accepted)
    status, body = request(base + "/health", args.key, timeout=10)
    print(f"health after: {status} {body[:300].decode(errors='replace')}")
    failed = wrong or status != 200 or not all(r["ok"] for r in ask_results)
    print("RESULT:", "ok" if not failed else "problems (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
