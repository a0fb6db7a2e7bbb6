"""Conversations: a `threads` table (one row per thread) and a `turns` table (one row per
question asked in it, with the answer as its JSON), created on first use.

Kept in the store, so a thread survives a restart and any process on the same
store sees it. A turn is written once its answer is complete; its answer JSON
is what `Answer.to_json()` gave (text, citations, sources), so a reopened
thread shows the same chips, and `history()` gives the turns a follow-up
question is asked in the light of (rag.types.Turn).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass

import pyarrow as pa

from rag.store.documents import quote
from rag.store.migrations import open_or_create
from rag.types import Turn

TITLE_CHARS = 80

THREADS = pa.schema([
    pa.field("id", pa.string()), pa.field("title", pa.string()),
    pa.field("created_at", pa.float64()), pa.field("updated_at", pa.float64()),
])
TURNS = pa.schema([
    pa.field("thread_id", pa.string()), pa.field("ordinal", pa.int32()),
    pa.field("question", pa.string()), pa.field("answer", pa.string()),
    pa.field("doc_ids", pa.list_(pa.string())), pa.field("created_at", pa.float64()),
])


@dataclass(frozen=True)
class ThreadRecord:
    id: str
    title: str
    created_at: float
    updated_at: float

    def to_json(self) -> dict:
        return {"id": self.id, "title": self.title, "created_at": self.created_at,
                "updated_at": self.updated_at}


def cited_documents(answer: dict) -> tuple[str, ...]:
    """The documents an answer's supported citations name, else those of its sources."""
    cited = [c["doc"] for c in answer.get("citations", []) if c.get("supported")]
    shown = cited or [s["doc"] for s in answer.get("sources", [])]
    return tuple(dict.fromkeys(shown))


def title_of(question: str) -> str:
    text = " ".join(question.split())
    return text if len(text) <= TITLE_CHARS else text[:TITLE_CHARS - 1].rstrip() + "…"


class Threads:
    def __init__(self, db):
        self.threads = open_or_create(db, "threads", THREADS)
        self.turns = open_or_create(db, "turns", TURNS)
        self._lock = threading.Lock()

    def create(self, title: str = "") -> ThreadRecord:
        now = time.time()
        record = ThreadRecord(uuid.uuid4().hex, title_of(title), now, now)
        with self._lock:
            self.threads.add([record.to_json()])
        return record

    def get(self, thread_id: str) -> ThreadRecord | None:
        rows = self.threads.search().where(f"id = {quote(thread_id)}").limit(1).to_list()
        return ThreadRecord(**{k: rows[0][k] for k in THREADS.names}) if rows else None

    def list(self) -> list[ThreadRecord]:
        rows = self.threads.to_arrow().to_pylist()
        records = [ThreadRecord(**{k: r[k] for k in THREADS.names}) for r in rows]
        return sorted(records, key=lambda r: -r.updated_at)

    def turns_of(self, thread_id: str) -> list[dict]:
        """The thread's turns, oldest first: question, answer (its JSON), created_at."""
        rows = self.turns.search().where(f"thread_id = {quote(thread_id)}").limit(None) \
            .to_list()
        rows.sort(key=lambda r: r["ordinal"])
        return [{"question": r["question"], "answer": json.loads(r["answer"]),
                 "created_at": r["created_at"]} for r in rows]

    def history(self, thread_id: str) -> list[Turn]:
        return [Turn(question=t["question"], answer=t["answer"].get("answer", ""),
                     doc_ids=cited_documents(t["answer"])) for t in self.turns_of(thread_id)]

    def add_turn(self, thread_id: str, question: str, answer: dict) -> None:
        """Record a complete answer; an untitled thread takes its first question as title."""
        now = time.time()
        with self._lock:
            ordinal = self.turns.count_rows(f"thread_id = {quote(thread_id)}")
            self.turns.add([{"thread_id": thread_id, "ordinal": ordinal, "question": question,
                             "answer": json.dumps(answer),
                             "doc_ids": list(cited_documents(answer)), "created_at": now}])
            record = self.get(thread_id)
            values = {"updated_at": now}
            if record is not None and not record.title:
                values["title"] = title_of(question)
            self.threads.update(where=f"id = {quote(thread_id)}", values=values)

    def delete(self, thread_id: str) -> bool:
        found = self.get(thread_id) is not None
        with self._lock:
            self.threads.delete(f"id = {quote(thread_id)}")
            self.turns.delete(f"thread_id = {quote(thread_id)}")
        return found


def open_threads(root, storage_options=None) -> Threads:
    """The threads of the store at `root` (a folder or an object-store URI), without
    loading an embedder (`rag threads`)."""
    from rag.store.location import connect

    return Threads(connect(root, storage_options))
