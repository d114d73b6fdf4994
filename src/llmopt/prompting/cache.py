"""Every model call cached on disk: SQLite in the user cache directory, keyed by a hash of backend, model, prompt
and decoding parameters, so reruns and resumed runs cost nothing. Safe to share between threads and processes
(WAL journal, a busy timeout, one connection per thread)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any


def default_path() -> Path:
    """<llmopt cache dir>/prompt-calls.sqlite (llmopt.llm.cache_dir(): $LLMOPT_CACHE or ~/.cache/llmopt)."""
    from llmopt.llm import cache_dir

    return cache_dir() / "prompt-calls.sqlite"


def call_key(backend: str, model: str, messages: list[dict], params: dict[str, Any]) -> str:
    """sha256 of the call: which backend and model, the exact chat, and the decoding parameters."""
    blob = json.dumps({"backend": backend, "model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class CallCache:
    """get/put JSON values by call key; `hits` and `misses` count lookups."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._lock = threading.Lock()
        self.hits = self.misses = 0
        with self._conn() as c:
            c.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            conn.execute("PRAGMA journal_mode=WAL")  # readers do not block the one writer
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get(self, key: str) -> Any | None:
        row = self._conn().execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        with self._lock:
            if row is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        with self._conn() as c:  # one transaction; INSERT OR REPLACE: two writers of one key store the same value
            c.execute("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", (key, json.dumps(value)))
