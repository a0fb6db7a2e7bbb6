"""Files -> documents -> chunks -> vectors -> store, incrementally and never stopped by a bad file.

Parsing runs in worker processes (a per-file time limit; a crash or hang in a
parser cannot take the batch down) while this process chunks, embeds and
writes. Writes are grouped: chunks of several documents first, then their
document rows, so a document becomes searchable only once complete.

`ingest_paths` decides what to do (unchanged files are skipped before any
work), hands the rest to a `Process` (parse + chunk + embed: `process_files`
here, or ingest/distributed.py on a Ray cluster) and writes and reports
what comes back, the same way whichever ran it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from dataclasses import replace as with_changes
from pathlib import Path

from ingest.chunking import chunk_document
from ingest.loaders import iter_load
from rag.runtime import Runtime
from rag.text import chunk_piece_spans, piece_text, with_heading
from rag.types import Chunk, Document

STATUSES = ("ingested", "unchanged", "replaced", "skipped", "failed")
WRITE_CHUNKS = 512  # flush to the store after this many embedded chunks
EMBED_GROUP_CHUNKS = 128  # embed documents together until they hold this many chunks

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FileResult:
    path: str
    status: str
    reason: str = ""
    pages: int = 0
    chunks: int = 0
    doc_id: str = ""
    empty_pages: int = 0


@dataclass
class Timings:
    parse: float = 0.0  # waiting on parser workers (their work overlaps ours)
    chunk: float = 0.0
    embed: float = 0.0
    write: float = 0.0
    index: float = 0.0
    total: float = 0.0


@dataclass
class Outcome:
    """What parse + chunk + embed made of one file: its document, chunks and their
    vectors (one (n_pieces, dim) array per chunk), or why it could not be loaded."""

    path: Path
    doc: Document | None = None
    chunks: list[Chunk] = field(default_factory=list)
    vectors: list = field(default_factory=list)
    error: Exception | None = None  # LoadError or UnsupportedFile, with its reason


# (files to ingest, PDF passwords, timings to add to) -> an Outcome per file, in any order
Process = Callable[[list[Path], Sequence[str], Timings], Iterable[Outcome]]


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    def counts(self) -> dict[str, int]:
        seen = Counter(f.status for f in self.files)
        return {s: seen.get(s, 0) for s in STATUSES}

    @property
    def ok(self) -> bool:
        return not any(f.status == "failed" for f in self.files)

    def to_json(self) -> dict:
        return {"counts": self.counts(), "pruned": self.pruned,
                "timings": asdict(self.timings), "files": [asdict(f) for f in self.files]}


def discover(paths: Sequence[Path], *, recursive: bool = True, include: Sequence[str] = (),
             exclude: Sequence[str] = ()) -> list[Path]:
    """Files named or found under folders, filtered by glob patterns on the name or path."""
    found: list[Path] = []
    for root in paths:
        if root.is_file():
            found.append(root)
            continue
        if not root.is_dir():
            raise FileNotFoundError(f"{root}: no such file or folder")
        walker = root.rglob("*") if recursive else root.glob("*")
        found.extend(sorted(p for p in walker if p.is_file() and not _hidden(p, root)))

    def keep(p: Path) -> bool:
        def hit(pattern: str) -> bool:
            return fnmatch.fnmatch(p.name, pattern) or fnmatch.fnmatch(str(p), pattern)

        return (not include or any(map(hit, include))) and not any(map(hit, exclude))

    seen: set[Path] = set()
    unique = []
    for p in found:
        resolved = p.resolve()
        if resolved not in seen and keep(p):
            seen.add(resolved)
            unique.append(resolved)
    return unique


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Writer:
    """Collects embedded documents and writes them in groups (chunks before rows)."""

    def __init__(self, runtime: Runtime, timings: Timings, replace: bool = True):
        self.runtime = runtime
        self.replace = replace  # remove other documents recorded at a new one's path
        self.timings = timings
        self.pending: list[tuple[Document, list[Chunk], object, Path, FileResult]] = []
        self.size = 0

    def add(self, doc: Document, chunks: list[Chunk], vectors, source: Path,
            result: FileResult) -> None:
        self.pending.append((doc, chunks, vectors, source, result))
        self.size += len(chunks)
        if self.size >= WRITE_CHUNKS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        start = time.perf_counter()
        store = self.runtime.store
        store.add_documents([(d, c, v, s) for d, c, v, s, _ in self.pending])
        for doc, *_ in self.pending if self.replace else ():
            for old in store.documents.at_path(doc.path):
                if old.id != doc.id:
                    store.delete_document(old.id)
        self.pending.clear()
        self.size = 0
        self.timings.write += time.perf_counter() - start


def ingest_paths(paths: Sequence[Path], runtime: Runtime, *, recursive: bool = True,
                 include: Sequence[str] = (), exclude: Sequence[str] = (), prune: bool = False,
                 passwords: Sequence[str] = (), workers: int | None = None,
                 progress: Progress | None = None,
                 on_file: Callable[[FileResult], None] | None = None,
                 names: dict[Path, str] | None = None, sweep: bool = True,
                 replace: bool = True, process: Process | None = None) -> IngestReport:
    """Ingest files and folders; see the module docstring. Raises FileNotFoundError for bad paths.

    `names` maps a file to the path recorded for it (uploads are stored under
    their display name, not the temporary file's). With `replace` (the CLI's path
    semantics) a changed file is the new version of the document recorded at its
    path, which is removed; without it (web uploads) no other document is touched.
    A file whose bytes are already stored is "unchanged" either way. `process` runs
    parse + chunk + embed on the files that need it (default: `process_files` in this
    process, `workers` parser processes); what it returns is written and reported here.
    """
    started = time.perf_counter()
    roots = [Path(p).expanduser().resolve() for p in paths]
    files = discover(roots, recursive=recursive, include=include, exclude=exclude)
    names = names or {}
    report = IngestReport()
    store = runtime.store
    if sweep:
        store.sweep_orphans()
    notify = progress or (lambda stage, done, total: None)

    def finish(result: FileResult) -> None:
        report.files.append(result)
        if on_file:
            on_file(result)
        notify("files", len(report.files), len(files))

    todo, previous = _plan(files, store, names, replace, finish)
    run = process if process is not None else local_process(runtime, workers)
    writer = _Writer(runtime, report.timings, replace)
    done = Counter()
    for outcome in run(todo, list(passwords), report.timings) if todo else ():
        finish(_record(outcome, writer, previous, names, done, notify))
    writer.flush()
    if prune:
        report.pruned = prune_missing(runtime, roots)
    start = time.perf_counter()
    if any(f.status in ("ingested", "replaced") for f in report.files) or report.pruned:
        store.chunks.refresh_indexes()  # what search needs now; nothing is rewritten
    if sweep:  # a batch run (`rag ingest`): compaction and cleanup, when due
        store.maintain()  # (the web server runs it on its worker between jobs)
    report.timings.index = time.perf_counter() - start
    report.timings.total = time.perf_counter() - started
    return report


def _plan(files: list[Path], store, names: dict[Path, str], replace: bool,
          finish: Callable[[FileResult], None]) -> tuple[list[Path], dict[Path, list]]:
    """The files that need work, and per file the stored versions it replaces; files whose
    bytes are stored already are finished here as "unchanged"."""
    todo: list[Path] = []
    previous: dict[Path, list] = {}
    # One read of the documents table, not a query per file: re-runs over
    # thousands of unchanged files stay fast.
    stored = store.documents.list()
    by_id = {r.id: r for r in stored}
    by_path: dict[str, list] = {}
    for record in stored:
        by_path.setdefault(record.path, []).append(record)
    for path in files:
        doc_id = file_sha256(path)
        shown = names.get(path, str(path))
        stale = [v for v in by_path.get(shown, []) if v.id != doc_id] if replace else []
        record = by_id.get(doc_id)
        if record is not None:
            # A replacement interrupted after the new version landed at this path; the same
            # bytes stored under another path leave that path's documents alone.
            for old in stale if record.path == shown else ():
                store.delete_document(old.id)
            finish(FileResult(shown, "unchanged", pages=record.pages, chunks=record.chunks,
                              doc_id=doc_id))
        else:
            previous[path] = stale
            todo.append(path)
    return todo, previous


def _record(outcome: Outcome, writer: _Writer, previous: dict[Path, list],
            names: dict[Path, str], done: Counter, notify: Progress) -> FileResult:
    """The file's result; a document goes to the writer under its recorded path."""
    path = outcome.path
    shown = names.get(path, str(path))
    if outcome.error is not None:
        status = "skipped" if type(outcome.error).__name__ == "UnsupportedFile" else "failed"
        return FileResult(shown, status, reason=_one_line(outcome.error))
    doc, chunks = outcome.doc, outcome.chunks
    title = doc.title
    if shown != str(path) and title == path.stem:  # named after our temporary copy
        title = Path(shown).stem
    doc = with_changes(doc, path=shown, title=title)
    status = "replaced" if previous.get(path) else "ingested"
    result = FileResult(doc.path, status, pages=len(doc.pages), chunks=len(chunks),
                        doc_id=doc.id, empty_pages=doc.empty_pages)
    writer.add(doc, chunks, outcome.vectors, path, result)
    done["pages"] += len(doc.pages)
    done["chunks"] += len(chunks)
    notify("pages", done["pages"], 0)
    notify("chunks", done["chunks"], 0)
    return result


def local_process(runtime: Runtime, workers: int | None = None) -> Process:
    """The default Process: `process_files` in this process with the runtime's embedder."""
    workers = workers or min(2, os.cpu_count() or 1)

    def run(todo: list[Path], passwords: Sequence[str], timings: Timings) -> Iterator[Outcome]:
        return process_files(todo, runtime.embedder, runtime.config, passwords=passwords,
                             workers=workers, timings=timings)

    return run


def process_files(paths: Sequence[Path], embedder, config, *, passwords: Sequence[str] = (),
                  workers: int = 2, timings: Timings | None = None) -> Iterator[Outcome]:
    """Parse (in `workers` time-limited processes), chunk and embed `paths`: an Outcome
    per file, as each group of documents is embedded.

    Several documents share one embedding call (a short document alone is one or two
    batches; together they keep every encoder thread busy); each stays whole.
    """
    timings = timings if timings is not None else Timings()
    pending: list[Outcome] = []
    pending_chunks = 0

    def embedded() -> list[Outcome]:
        nonlocal pending_chunks
        start = time.perf_counter()
        vectors = embed_pieces(embedder, [c for o in pending for c in o.chunks])
        timings.embed += time.perf_counter() - start
        offset = 0
        for outcome in pending:
            outcome.vectors = vectors[offset:offset + len(outcome.chunks)]
            offset += len(outcome.chunks)
        out = pending[:]
        pending.clear()
        pending_chunks = 0
        return out

    wait = time.perf_counter()
    for path, loaded in iter_load(list(paths), passwords=list(passwords),
                                  timeout_s=config.parse_timeout, workers=workers,
                                  ocr_languages=config.ocr_languages):
        timings.parse += time.perf_counter() - wait
        if isinstance(loaded, Exception):
            yield Outcome(path, error=loaded)
            wait = time.perf_counter()
            continue
        start = time.perf_counter()
        chunks = chunk_document(loaded, count_tokens=embedder.count_tokens,
                                max_tokens=config.chunk_tokens,
                                overlap_tokens=config.chunk_overlap)
        timings.chunk += time.perf_counter() - start
        pending.append(Outcome(path, doc=loaded, chunks=chunks))
        pending_chunks += len(chunks)
        if pending_chunks >= EMBED_GROUP_CHUNKS:
            yield from embedded()
        wait = time.perf_counter()
    if pending:
        yield from embedded()


def embed_pieces(embedder, chunks: Sequence[Chunk]) -> list:
    """Per chunk, the (n, dim) vectors of its sentence pieces, in one embedding call.
    A chunk's heading (its section, a table's title and column headers) is embedded in
    front of each of its pieces (with_heading).

    The store keeps them all (search ranks a chunk by its best piece) and
    their mean as the chunk's vector. Embedding pieces instead of whole
    chunks costs about the same: the same tokens, in shorter sequences.
    """
    pieces = [[with_heading(c.heading, piece_text(c.text, p))
               for p in (c.pieces or chunk_piece_spans(c.text))]
              for c in chunks]
    flat = embedder.embed_batch([p for ps in pieces for p in ps])
    out, offset = [], 0
    for ps in pieces:
        out.append(flat[offset:offset + len(ps)])
        offset += len(ps)
    return out


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def prune_missing(runtime: Runtime, roots: Iterable[Path]) -> list[str]:
    """Delete stored documents under `roots` whose files no longer exist."""
    roots = [str(r) for r in roots]
    removed = []
    for record in runtime.store.documents.list():
        under = any(record.path == r or record.path.startswith(r.rstrip("/") + "/")
                    for r in roots)
        if under and not Path(record.path).exists():
            runtime.store.delete_document(record.id)
            removed.append(record.path)
    return removed


def ingest_file(path: Path, runtime: Runtime, *, display_path: str | None = None,
                password: str | None = None, on_progress: Progress | None = None,
                replace: bool = True) -> FileResult:
    """Ingest one file (the web upload path); `display_path` is the path the library records;
    `replace` as for ingest_paths."""
    real = Path(path).resolve()
    report = ingest_paths([real], runtime, passwords=[password] if password else [],
                          names={real: display_path} if display_path else None,
                          progress=on_progress, sweep=False, workers=1, replace=replace)
    return report.files[0]
