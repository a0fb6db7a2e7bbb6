"""File -> Document: the type from content and name (ingest/filetypes.py), then pages of text.

`iter_load` runs loaders in worker processes with a per-file time limit, so a
file that crashes or hangs a parser costs one worker, never the batch. OCR of
scanned PDF pages (ingest/ocr.py) runs in the same workers: each page it starts
gives the file ocr.PAGE_S more, so a long scan is not cut off while a hung page
still is. The workers' memory cap holds for OCR too: a page is drawn at most
ocr.MAX_PIXELS, and Tesseract runs as a child process under the same cap.
"""

from __future__ import annotations

import codecs
import hashlib
import multiprocessing as mp
import os
import re
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import wait
from pathlib import Path

from ingest.errors import LoadError, UnsupportedFile
from ingest.filetypes import SNIFF_BYTES, sniff
from ingest.ocr import PAGE_S as OCR_PAGE_S
from rag.types import Document, Page

_MD_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w:.-]+)""", re.IGNORECASE)

__all__ = [
    "LoadError",
    "UnsupportedFile",
    "decode_text",
    "iter_load",
    "load",
    "load_with_timeout",
]


def decode_text(data: bytes) -> str:
    """BOM (UTF-8/16/32), else UTF-8, else UTF-16 without BOM, else cp1252/Latin-1."""
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                       (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    sample = data[:4096]
    if sample and sample.count(b"\x00") > len(sample) // 4:  # UTF-16 without a BOM
        codec = "utf-16-le" if sample[1::2].count(0) > sample[0::2].count(0) else "utf-16-be"
        return data.decode(codec, errors="replace")
    try:
        return data.decode("cp1252")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _candidates(password: str | None, passwords: Sequence[str]) -> list[str]:
    return ([password] if password else []) + [p for p in passwords if p and p != password]


def _clean(text: str) -> str:
    text = text.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")
    return text.strip("\n\ufeff ")


def load(path: Path, *, password: str | None = None, passwords: Sequence[str] = (),
         ocr_languages: str = "auto", on_ocr_page: Callable[[int], None] | None = None
         ) -> Document:
    """Load one file; LoadError or UnsupportedFile with a one-line reason otherwise.

    `password` (and any further candidates in `passwords`) open encrypted PDFs.
    `ocr_languages` (rag/config.py) and `on_ocr_page` go to the PDF loader.
    """
    passwords = _candidates(password, passwords)
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"cannot read: {exc.strerror or exc}") from exc
    if not data.strip():
        raise LoadError("empty file")
    kind = sniff(data[:SNIFF_BYTES], path)
    sha = hashlib.sha256(data).hexdigest()
    if kind == "pdf":
        from ingest.pdf import load_pdf

        return load_pdf(path, sha, passwords, ocr_languages=ocr_languages,
                        on_ocr_page=on_ocr_page)
    if kind == "html":
        return _load_html(path, data, sha)
    text = _clean(decode_text(data))
    if not text.strip():
        raise LoadError("no text")
    headings: tuple = ()
    title = path.stem
    if kind == "markdown":
        headings = _markdown_headings(text)
        first = next((h for h in headings if " > " not in h[2]), None)
        title = first[2] if first else title
    else:
        title = _first_line_title(text) or title
    mime = "text/markdown" if kind == "markdown" else "text/plain"
    return Document(path=str(path), title=title, mime=mime, sha256=sha,
                    pages=[Page(1, text)], headings=headings)


def _first_line_title(text: str) -> str:
    """A short first line reads as the title of a note or paper."""
    first = text.lstrip().split("\n", 1)[0].strip()
    return first if 3 <= len(first) <= 150 and len(first.split()) <= 25 else ""


def _markdown_headings(text: str) -> tuple[tuple[int, int, str], ...]:
    out, stack = [], []
    fenced = _fenced_ranges(text)
    for match in _MD_HEADING.finditer(text):
        if any(a <= match.start() < b for a, b in fenced):
            continue
        level, title = len(match.group(1)), match.group(2).strip()
        stack = [s for s in stack if s[0] < level] + [(level, title)]
        out.append((1, match.start(), " > ".join(t for _, t in stack)))
    return tuple(out)


def _fenced_ranges(text: str) -> list[tuple[int, int]]:
    fences = [m.start() for m in re.finditer(r"^(```|~~~)", text, re.MULTILINE)]
    return list(zip(fences[::2], fences[1::2] + [len(text)] * (len(fences) % 2)))


def _load_html(path: Path, data: bytes, sha: str) -> Document:
    from ingest.html import extract

    html = _decode_html(data)
    title, text, heads = extract(html)
    if not text.strip():
        raise LoadError("no text in the page's main content")
    return Document(path=str(path), title=title or path.stem, mime="text/html", sha256=sha,
                    pages=[Page(1, text)], headings=tuple((1, o, h) for o, h in heads))


def _decode_html(data: bytes) -> str:
    if data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return decode_text(data)
    declared = _META_CHARSET.search(data[:8192])
    if declared:
        try:
            return data.decode(declared.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass  # an unknown charset name: detect instead
    return decode_text(data)


# -- worker processes with a per-file time limit -------------------------------------------

def _worker(conn, passwords: Sequence[str], ocr_languages: str) -> None:
    import logging
    import warnings

    # pypdf narrates every repair it makes; the one-line reason is what we report.
    logging.getLogger("pypdf").setLevel(logging.CRITICAL)
    warnings.simplefilter("ignore")
    _limit_memory(WORKER_MEMORY)
    _lead_process_group()
    _exit_with_parent()
    while True:
        try:
            path = conn.recv()
        except EOFError:
            return
        if path is None:
            return
        try:
            result: object = load(Path(path), passwords=passwords, ocr_languages=ocr_languages,
                                  on_ocr_page=lambda n: conn.send(("ocr", n)))
        except (LoadError, UnsupportedFile) as exc:
            result = exc
        except RecursionError:
            result = LoadError("malformed: structure nested too deeply")
        except MemoryError:
            result = LoadError("malformed: needs too much memory")
        except Exception as exc:  # noqa: BLE001 - a parser bug must not stop the batch
            result = LoadError(f"cannot parse: {type(exc).__name__}: {exc}"[:300])
        conn.send(result)


WORKER_MEMORY = 4 << 30  # bytes of address space a parser may take before MemoryError


def _limit_memory(limit: int) -> None:
    # A decompression bomb should fail one file, not swap the machine for everyone else.
    try:
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard == resource.RLIM_INFINITY or hard > limit:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):
        pass  # not on this platform: the time limit still applies


def _lead_process_group() -> None:
    # The worker's children (Tesseract, ingest/ocr.py) join its group, so killing the group
    # stops a hung child with its worker (_kill).
    try:
        os.setpgid(0, 0)
    except (AttributeError, OSError):
        pass


def _kill(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker and its children
    except (AttributeError, OSError):
        proc.kill()  # the group is not there yet (or not on this platform)


def _exit_with_parent() -> None:
    # A parent killed without cleanup must not leave a worker parsing a hung file forever.
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        if os.getpgrp() == os.getpid():
            os.killpg(0, signal.SIGKILL)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


class _Slot:
    def __init__(self, ctx, passwords: Sequence[str], ocr_languages: str):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, list(passwords), ocr_languages),
                                daemon=True)
        self.proc.start()
        child.close()
        self.path: Path | None = None
        self.started = self.deadline = 0.0
        self.ocr_page = 0

    def give(self, path: Path, timeout_s: float) -> None:
        self.path, self.started = path, time.monotonic()
        self.deadline, self.ocr_page = self.started + timeout_s, 0
        self.conn.send(str(path))

    def result(self) -> object | None:
        """The worker's answer (a Document or the reason it failed) if it has come, else
        None. Each OCR page it reports starting moves the deadline to OCR_PAGE_S ahead."""
        while self.conn.poll():
            message = self.conn.recv()
            if isinstance(message, tuple) and message[:1] == ("ocr",):
                self.ocr_page = message[1]
                self.deadline = max(self.deadline, time.monotonic() + OCR_PAGE_S)
                continue
            return message
        return None

    def timed_out(self, timeout_s: float) -> LoadError:
        if not self.ocr_page:
            return LoadError(f"timed out after {timeout_s:.0f} s")
        return LoadError(f"timed out after {time.monotonic() - self.started:.0f} s"
                         f" (OCR of page {self.ocr_page} took over {OCR_PAGE_S:.0f} s)")

    def stop(self, kill: bool = False) -> None:
        if kill:
            _kill(self.proc)
        else:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.proc.join(timeout=5)
        self.conn.close()


def iter_load(paths: Sequence[Path], password: str | None = None, timeout_s: float = 120,
              workers: int = 2, *, passwords: Sequence[str] = (),
              ocr_languages: str | None = None
              ) -> Iterator[tuple[Path, Document | Exception]]:
    """Yield (path, Document or the reason it failed) as workers finish, in any order.

    Each file is loaded in one of `workers` processes; a worker past `timeout_s`
    on one file (plus OCR_PAGE_S from the start of each page it OCRs), or one
    that dies, is killed and replaced, and that file gets a LoadError ("timed out
    after N s", "parser crashed on this file"). `ocr_languages`: as in
    rag/config.py; None: the configured one (config file, RAG_OCR_LANGUAGES).
    Callers that are scripts need the usual `if __name__ == "__main__":` guard (spawn).
    """
    passwords = _candidates(password, passwords)
    todo = list(paths)[::-1]
    if not todo:
        return
    if ocr_languages is None:
        ocr_languages = _configured_ocr_languages()
    ctx = mp.get_context("spawn")  # never fork a process that holds MLX and BLAS threads
    slots = [_Slot(ctx, passwords, ocr_languages)
             for _ in range(max(1, min(workers, len(todo))))]
    try:
        for slot in slots:
            if todo:
                slot.give(todo.pop(), timeout_s)
        while any(s.path for s in slots):
            busy = [s for s in slots if s.path]
            left = min(s.deadline for s in busy) - time.monotonic()
            wait([s.conn for s in busy], timeout=max(0.0, left))
            for slot in busy:
                path = slot.path
                # Read before judging the time: the consumer may have spent long on the
                # last yield; a result that arrived meanwhile is a result, not a timeout.
                try:
                    result, replace = slot.result(), False
                except (EOFError, OSError):
                    result, replace = LoadError("parser crashed on this file"), True
                if result is None:
                    if time.monotonic() < slot.deadline:
                        continue
                    result, replace = slot.timed_out(timeout_s), True
                yield path, result
                if replace:
                    slots.remove(slot)
                    slot.stop(kill=True)
                    slot = _Slot(ctx, passwords, ocr_languages)
                    slots.append(slot)
                slot.path = None
                if todo:
                    slot.give(todo.pop(), timeout_s)
    finally:
        for slot in slots:
            slot.stop(kill=bool(slot.path))


def _configured_ocr_languages() -> str:
    from rag.config import ConfigError, load_config

    try:
        return load_config().ocr_languages
    except ConfigError:
        return "auto"  # the caller's own configuration has already been checked


def load_with_timeout(path: Path, password: str | None = None, timeout_s: float = 120, *,
                      passwords: Sequence[str] = (), ocr_languages: str | None = None
                      ) -> Document:
    """`load` in a worker process killed past `timeout_s`: returns the Document or raises."""
    [(_, result)] = list(iter_load([Path(path)], password, timeout_s, 1, passwords=passwords,
                                   ocr_languages=ocr_languages))
    if isinstance(result, Exception):
        raise result
    return result
