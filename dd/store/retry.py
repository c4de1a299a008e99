"""The retry store: notices whose work failed, kept on disk and tried again later.

One SQLite database per configuration instance, written with full
synchronisation, so a notice acknowledged to the broker because it is "in the
retry store" really is on disk.  Entries are keyed by the path they deliver:
a newer notice for a path replaces an older one waiting there, and a path
delivered from the broker meanwhile cancels its waiting retry, so the store
never replays stale content over fresh.  Each entry waits `delay`, then twice
as long after each further failure (at most MAX_DELAY), and is given up once
it has been failing for `ttl`.  The store holds at most `capacity` entries;
`full` tells the caller to stop taking new work until it drains.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import StrPath

MAX_DELAY = 600.0
DEFAULT_CAPACITY = 100_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS retry (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    message BLOB NOT NULL,
    first_failed REAL NOT NULL,
    attempts INTEGER NOT NULL,
    next_at REAL NOT NULL,
    reason TEXT NOT NULL
)
"""


@dataclasses.dataclass(frozen=True)
class Entry:
    id: int
    key: str
    message: bytes
    first_failed: float
    attempts: int
    reason: str


class RetryStore:
    """Failed notices waiting for another try, oldest first."""

    def __init__(self, path: StrPath, *, ttl: float, delay: float = 10.0, capacity: int = DEFAULT_CAPACITY,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.ttl = ttl
        self.delay = delay
        self.capacity = capacity
        self.clock = clock
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._keys = {row[0] for row in self._db.execute("SELECT key FROM retry")}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    @property
    def full(self) -> bool:
        return len(self._keys) >= self.capacity

    def _backoff(self, attempts: int) -> float:
        wait: float = self.delay * 2 ** (attempts - 1)
        return min(wait, MAX_DELAY)

    def put(self, failures: Iterable[tuple[str, bytes, str]]) -> None:
        """Keep (key, message, reason) triples, durably, in one transaction.

        A key already waiting gets the new message and starts over."""
        failures = list(failures)
        now = self.clock()
        with self._db:  # one transaction, committed (and synced) or rolled back
            for key, message, reason in failures:
                self._db.execute(
                    "INSERT INTO retry (key, message, first_failed, attempts, next_at, reason) "
                    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT(key) DO UPDATE SET message=excluded.message, "
                    "first_failed=excluded.first_failed, attempts=1, next_at=excluded.next_at, "
                    "reason=excluded.reason", (key, message, now, now + self._backoff(1), reason))
        self._keys.update(key for key, _, _ in failures)

    def due(self, limit: int) -> list[Entry]:
        """Up to `limit` entries whose time has come, in the order they first failed."""
        rows = self._db.execute(
            "SELECT id, key, message, first_failed, attempts, reason FROM retry WHERE next_at <= ? "
            "ORDER BY id LIMIT ?", (self.clock(), limit)).fetchall()
        return [Entry(*row) for row in rows]

    def postpone(self, entries: Iterable[Entry]) -> None:
        """Move these entries' next try on, as a failure would, before they are worked on: one
        whose work crashes the process comes back after its backoff, not at every restart."""
        now = self.clock()
        with self._db:
            self._db.executemany("UPDATE retry SET next_at = ? WHERE id = ?",
                                 [(now + self._backoff(entry.attempts + 1), entry.id) for entry in entries])

    def failed_again(self, entries_and_reasons: Iterable[tuple[Entry, str]]) -> list[Entry]:
        """Reschedule (entry, reason) pairs; return the entries given up because they have
        been failing for longer than ttl (removed from the store)."""
        now = self.clock()
        expired = []
        with self._db:
            for entry, reason in entries_and_reasons:
                if now - entry.first_failed >= self.ttl:
                    self._db.execute("DELETE FROM retry WHERE id = ?", (entry.id,))
                    expired.append(entry)
                else:
                    attempts = entry.attempts + 1
                    self._db.execute("UPDATE retry SET attempts = ?, next_at = ?, reason = ? WHERE id = ?",
                                     (attempts, now + self._backoff(attempts), reason, entry.id))
        self._keys.difference_update(entry.key for entry in expired)
        return expired

    def remove(self, keys: Iterable[str]) -> None:
        """Forget the entries of these keys: retried successfully, refused for good, or
        delivered anew from the broker meanwhile."""
        keys = [k for k in keys if k in self._keys]  # the common case costs no disk write
        if not keys:
            return
        with self._db:
            self._db.executemany("DELETE FROM retry WHERE key = ?", [(k,) for k in keys])
        self._keys.difference_update(keys)

    def close(self) -> None:
        self._db.close()


def waiting(path: Path) -> int | None:
    """How many entries the store at `path` holds, read-only (for dd_ctl status);
    None when it cannot be read."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
    except sqlite3.Error:
        return None
    try:
        count: int = db.execute("SELECT COUNT(*) FROM retry").fetchone()[0]
        return count
    except sqlite3.Error:
        return None
    finally:
        db.close()
