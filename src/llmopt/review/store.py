"""Review decisions in SQLite inside the run directory: one row per decision, committed at once.

Decisions are appended, never updated: the latest row per item is its current decision, and a decision made in
a second tab on the same item is kept beside the first (the answer says which one it followed). WAL journal with
synchronous=FULL: a decision the server answered for survives a killed server or a lost browser.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ACTIONS = ("accept", "reject", "relabel", "edit")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    item_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('accept', 'reject', 'relabel', 'edit')),
    label TEXT,
    text TEXT,
    reviewer TEXT NOT NULL,
    at TEXT NOT NULL,
    base INTEGER
);
CREATE INDEX IF NOT EXISTS decisions_item ON decisions (item_id, seq);
"""

_COLS = ("seq", "item_id", "kind", "action", "label", "text", "reviewer", "at", "base")


class DecisionStore:
    """run_dir/review/decisions.sqlite."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one writer at a time inside this process; SQLite locks across processes
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA synchronous=FULL")
        return db

    def add(self, item_id: str, kind: str, action: str, reviewer: str, label: str | None = None,
            text: str | None = None, base: int | None = None) -> dict[str, Any]:
        """Append a decision; returns it with `previous` (the decision it replaced, if any) and `conflict` (True
        when `base` — the seq the client last saw for this item, 0 for none — is not the latest one: another tab
        decided since)."""
        if action not in ACTIONS:
            raise ValueError(f"action {action!r}: one of {ACTIONS}")
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        with self._lock:
            db = self._connect()
            try:
                db.execute("BEGIN IMMEDIATE")
                prev = db.execute(f"SELECT {', '.join(_COLS)} FROM decisions WHERE item_id = ? ORDER BY seq DESC "
                                  "LIMIT 1", (item_id,)).fetchone()
                cur = db.execute("INSERT INTO decisions (item_id, kind, action, label, text, reviewer, at, base) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (item_id, kind, action, label, text, reviewer, at,
                                                                     base))
                seq = cur.lastrowid
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK") if db.in_transaction else None
                raise
            finally:
                db.close()
        previous = dict(zip(_COLS, prev)) if prev else None
        latest_seen = previous["seq"] if previous else None
        return {"seq": seq, "item_id": item_id, "kind": kind, "action": action, "label": label, "text": text,
                "reviewer": reviewer, "at": at, "base": base, "previous": previous,
                "conflict": base is not None and (latest_seen or 0) != base}

    def latest(self) -> dict[str, dict[str, Any]]:
        """The current decision of every decided item."""
        db = self._connect()
        try:
            rows = db.execute(f"SELECT {', '.join(_COLS)} FROM decisions d WHERE seq = (SELECT MAX(seq) FROM "
                              "decisions WHERE item_id = d.item_id)").fetchall()
        finally:
            db.close()
        return {r[1]: dict(zip(_COLS, r)) for r in rows}

    def history(self, item_id: str | None = None) -> list[dict[str, Any]]:
        db = self._connect()
        try:
            q = f"SELECT {', '.join(_COLS)} FROM decisions"
            rows = db.execute(q + " WHERE item_id = ? ORDER BY seq", (item_id,)).fetchall() if item_id else \
                db.execute(q + " ORDER BY seq").fetchall()
        finally:
            db.close()
        return [dict(zip(_COLS, r)) for r in rows]


def summarize(items: list[Any], latest: dict[str, dict[str, Any]], decisions: int) -> dict[str, Any]:
    """What the report shows: items, how many were reviewed (per kind), and what changed."""
    from collections import Counter

    by_kind: dict[str, dict[str, int]] = {}
    known = {it.id: it for it in items}
    for it in items:
        k = by_kind.setdefault(it.kind, {"items": 0, "reviewed": 0})
        k["items"] += 1
        if it.id in latest:
            k["reviewed"] += 1
    acts = Counter(d["action"] for iid, d in latest.items() if iid in known)
    relabelled = sum(1 for iid, d in latest.items() if iid in known and d["action"] == "relabel"
                     and d["label"] != known[iid].given_label)
    edited = sum(1 for iid, d in latest.items() if iid in known and d["action"] == "edit"
                 and d["text"] != known[iid].text)
    return {
        "items": len(items),
        "reviewed": sum(1 for iid in latest if iid in known),
        "decisions": decisions,
        "by_kind": by_kind,
        "by_action": dict(sorted(acts.items())),
        "labels_changed": relabelled,
        "texts_edited": edited,
        "rejected": acts.get("reject", 0),
        "reviewers": sorted({d["reviewer"] for d in latest.values()}),
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
