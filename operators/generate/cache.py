"""A persistent response cache keyed by the canonical request: re-running a job makes no repeat calls.

One SQLite file (WAL), one row per answered request, committed as soon as the answer arrives, so a job
killed half-way resumes with every finished call intact. The key covers only what decides the answer
(endpoint, model, messages, sampling parameters, seed, output schema): adding rows or steps leaves the
existing entries valid. Transient failures (transport, timeout, 429, 5xx) are not cached; answers are,
including truncated or unparseable ones, which the same request would reproduce.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class CachedAnswer:
    content: str
    finish_reason: str
    refusal: str | None
    model: str
    prompt_tokens: int
    completion_tokens: int


def request_key(canonical: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no whitespace)."""
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class ResponseCache:
    """SQLite-backed; `path=None` keeps it in memory (tests, one-shot runs)."""

    def __init__(self, path: str | Path | None) -> None:
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(":memory:" if path is None else str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # durable across a killed process; fsync at checkpoints
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, content TEXT NOT NULL, finish_reason TEXT,"
            " refusal TEXT, model TEXT, prompt_tokens INTEGER, completion_tokens INTEGER)"
        )
        self._db.execute(  # batches in flight (operators/generate/batch.py): found again after a restart
            "CREATE TABLE IF NOT EXISTS batches (batch_id TEXT NOT NULL, key TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (batch_id, key))"
        )
        self._db.commit()

    def record_batch(self, batch_id: str, keys: list[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO batches (batch_id, key) VALUES (?, ?)", [(batch_id, k) for k in keys])
        self._db.commit()

    def open_batches(self) -> dict[str, set[str]]:
        """batch id -> the request keys it was submitted with, for every batch not yet collected."""
        found: dict[str, set[str]] = {}
        for batch_id, key in self._db.execute("SELECT batch_id, key FROM batches WHERE done = 0"):
            found.setdefault(batch_id, set()).add(key)
        return found

    def close_batch(self, batch_id: str) -> None:
        self._db.execute("UPDATE batches SET done = 1 WHERE batch_id = ?", (batch_id,))
        self._db.commit()

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute(
            "SELECT content, finish_reason, refusal, model, prompt_tokens, completion_tokens FROM answers WHERE key=?",
            (key,),
        ).fetchone()
        return CachedAnswer(*row) if row else None

    def get_many(self, keys: list[str]) -> dict[str, CachedAnswer]:
        """The cached answers among `keys`, in one query per 500 keys (a lookup per request costs more)."""
        found = {}
        for start in range(0, len(keys), 500):
            part = keys[start:start + 500]
            rows = self._db.execute(
                "SELECT key, content, finish_reason, refusal, model, prompt_tokens, completion_tokens FROM answers "
                f"WHERE key IN ({','.join('?' * len(part))})", part)
            found.update((row[0], CachedAnswer(*row[1:])) for row in rows)
        return found

    def put(self, key: str, answer: CachedAnswer) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
            (key, answer.content, answer.finish_reason, answer.refusal, answer.model, answer.prompt_tokens,
             answer.completion_tokens),
        )
        self._db.commit()

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM answers").fetchone()[0]

    def close(self) -> None:
        self._db.close()
