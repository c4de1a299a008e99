"""What dd_poll announced of each remote tree: relative path → (size, mtime).

One SQLite file shared by every instance and configuration of dd_poll of this host: a
poll compares its listing with what is recorded here, and records what it announced once
the broker confirmed it, so a restart, or another instance, announces only what changed
since.  A `source` names one tree as polled and announced to one place (poll_url and
post_exchange).  Pollers on several hosts share one in Redis instead
(dd.store.polled_redis): `opened` gives the one a configuration names, both being a `Record`.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional, Protocol

from dd.store import database

if TYPE_CHECKING:
    from _typeshed import StrPath

    from dd.core.credentials import Url

#: (size, mtime) of a file as listed.
Key = tuple[int, float]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sources (
    source TEXT PRIMARY KEY        -- listed at least once: the first poll is behind us
);
CREATE TABLE IF NOT EXISTS files (
    source TEXT NOT NULL,
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    PRIMARY KEY (source, path)
)"""


class Record(Protocol):
    """The files of one source announced so far."""

    source: str

    def listed_before(self) -> bool:
        """Whether a poll of the source got its listing before: the first one may skip it."""

    def mark_listed(self) -> None: ...

    def known(self) -> dict[str, Key]:
        """Every path announced, with what it was announced as."""

    def record(self, changes: Iterable[tuple[str, Optional[Key]]]) -> None:
        """Paths announced as (size, mtime), or as deleted (None)."""

    def close(self) -> None: ...


def opened(url: Url | None, path: StrPath, source: str, namespace: str) -> Record:
    """The record in the Redis at `url` (keys of `namespace`: a user's) or, without one,
    in the SQLite file `path` of this host."""
    if url is None:
        return Polled(path, source)
    from dd.store.polled_redis import RedisPolled

    return RedisPolled(url, source, namespace)


class Polled:
    """The files of one source announced so far, in an SQLite file of this host."""

    def __init__(self, path: StrPath, source: str) -> None:
        self.source = source
        # A record lost in a power cut means a file announced again, never one missed.
        self._db = database.open_shared(path, _SCHEMA)
        self._lock = threading.Lock()

    def listed_before(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM sources WHERE source = ?", (self.source,)).fetchone() is not None

    def mark_listed(self) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sources (source) VALUES (?)", (self.source,))

    def known(self) -> dict[str, Key]:
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime FROM files WHERE source = ?", (self.source,))
            return {path: (size, mtime) for path, size, mtime in rows}

    def record(self, changes: Iterable[tuple[str, Optional[Key]]]) -> None:
        rows = list(changes)
        if not rows:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM files WHERE source = ? AND path = ?",
                                 [(self.source, path) for path, key in rows if key is None])
            self._db.executemany("INSERT OR REPLACE INTO files (source, path, size, mtime) VALUES (?, ?, ?, ?)",
                                 [(self.source, path, *key) for path, key in rows if key is not None])

    def close(self) -> None:
        with self._lock:
            self._db.close()
