"""The console's history: what each configuration had done, sampled every so often, for a day.

The console's sampler writes one row per configuration per sample: the totals its
instances recorded (dd.store.metrics) and its queue's backlog.  Rates come from the
difference of two samples (a restart, which starts the totals again, reads as no
traffic, never as a negative rate).  Rows older than KEEP go.  One SQLite file.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from dd.core.errors import ConfigError
from dd.store import database

if TYPE_CHECKING:
    from _typeshed import StrPath

#: How long samples are kept: the longest plot, and an hour more.
KEEP = 25 * 3600.0
_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    at REAL NOT NULL,
    configuration TEXT NOT NULL,    -- component/name
    files INTEGER NOT NULL,         -- delivered so far (totals of the live instances' records)
    bytes INTEGER NOT NULL,
    backlog INTEGER                 -- NULL: no queue, or not known
);
CREATE INDEX IF NOT EXISTS samples_at ON samples (configuration, at);
"""


@dataclasses.dataclass(frozen=True)
class Sample:
    at: float
    configuration: str
    files: int
    bytes: int
    backlog: int | None


@dataclasses.dataclass(frozen=True)
class Point:
    """Rates over the span that ends at `at`."""

    at: float
    files_per_second: float
    bytes_per_second: float
    backlog: int | None


class History:
    def __init__(self, path: StrPath) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        try:
            # Samples lost in a power cut leave a gap in a plot, nothing more.
            self._db = database.open_shared(self.path, _SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the console's history {self.path}: {error}",
                              fix="check that the state directory is writable") from None

    def record(self, samples: Iterable[Sample]) -> None:
        rows = [dataclasses.astuple(s) for s in samples]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO samples VALUES (?, ?, ?, ?, ?)", rows)
            if rows:
                self._db.execute("DELETE FROM samples WHERE at < ?", (max(r[0] for r in rows) - KEEP,))

    def samples(self, configuration: str, since: float) -> list[Sample]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM samples WHERE configuration = ? AND at >= ? ORDER BY at",
                                    (configuration, since)).fetchall()
        return [Sample(*row) for row in rows]

    def points(self, configuration: str, since: float) -> list[Point]:
        """Rates between consecutive samples since `since`."""
        found = self.samples(configuration, since)
        return [Point(b.at, max(b.files - a.files, 0) / span, max(b.bytes - a.bytes, 0) / span, b.backlog)
                for a, b in zip(found, found[1:]) if (span := b.at - a.at) > 0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
