"""The log index: what this pump announced, and who may report on it.

A log message names its consumer, and the broker vouches for who published
it; but nothing said the consumer ever received the notice it reports on.
The pump's relays (dd_sara) therefore record every notice they announce
(relative path, checksum, source, and the readers of private data) and every
notice they ingest from a source (the relay itself will report on it), always
before publishing, so that no consumer's log message can arrive before its
record.  The log router (dd_shovel route_logs) routes a log message only when an
entry matches it: same relative path, checksum and source, recorded within
`window` seconds, and a consumer who may report on it.

Who may report: anyone on a public notice, which every subscriber may have
received; on a private one, which goes to its readers' own exchanges alone, its
readers and the pump's relay_readers; on an ingested one, the relay alone.

Where log messages go next: an entry of a notice the relay read from another pump
names that pump (its `Upstream`: the broker and exchange the relay reports to), so
that the router sends its consumers' log messages back the way the notice came,
whatever the topology.  Upstreams are few (one a relay link): entries refer to them.

The index is one SQLite file (WAL) shared by every relay and router of the
account, like dd.store.nodupe's store.  It holds at most `limit` entries: the oldest
go first, and entries older than `window` are purged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dd.store import database
from dd.core.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import StrPath

    from dd.core.config import Config
    from dd.core.notice import Checksum, Notice

log = logging.getLogger("dd.logindex")

#: The file's name under the state directory when log_index is unset.
DEFAULT_NAME = "log_index.sqlite"
#: Entries recorded between two purges, so the index stays bounded.
PURGE_EVERY = 1000
#: Readers of an entry anyone may report on.
ANYONE = "*"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,    -- grows with each record: the oldest entries have the lowest
    key BLOB NOT NULL,         -- digest of relative path, source and checksum
    readers TEXT NOT NULL,     -- '*', or the users who may report on it, space-separated
    at REAL NOT NULL,
    upstream INTEGER,          -- upstreams.id of the pump the notice came from; NULL: none
    UNIQUE (key, readers)
);
CREATE INDEX IF NOT EXISTS entries_at ON entries (at);
CREATE TABLE IF NOT EXISTS upstreams (
    id INTEGER PRIMARY KEY,
    broker TEXT NOT NULL,      -- a broker URL without its password
    exchange TEXT NOT NULL,
    UNIQUE (broker, exchange)
);
"""


@dataclasses.dataclass(frozen=True)
class Upstream:
    """The pump a notice came from, as the relay that read it reports there: log messages
    about the notice go to `exchange` on `broker` (a URL without password)."""

    broker: str
    exchange: str


@dataclasses.dataclass(frozen=True)
class Entry:
    """A notice the pump announced or ingested, and who may report on it."""

    rel_path: str
    source: str
    checksum: Checksum | None
    readers: frozenset[str] | None  # who may report on it; None: anyone
    upstream: Upstream | None = None    # the pump it came from, if another


@dataclasses.dataclass(frozen=True)
class Match:
    """A log message's notice as the index knows it: the consumer may report on it, and
    its log messages go to `upstream`, or to the source on this pump when None."""

    upstream: Upstream | None


def announced(notice: Notice, relay_readers: Iterable[str] = (), upstream: Upstream | None = None) -> Entry:
    """The entry of a notice the pump publishes: private data's readers and relays may
    report on it, anyone may if it has no readers; `upstream`: the pump it came from."""
    readers = frozenset(notice.readers) | frozenset(relay_readers) if notice.readers else None
    return Entry(notice.rel_path, notice.source, notice.checksum, readers, upstream)


def ingested(notice: Notice, relay_user: str) -> Entry:
    """The entry of a notice a relay read from its source: the relay reports on it."""
    return Entry(notice.rel_path, notice.source, notice.checksum, frozenset({relay_user}))


def _key(rel_path: str, source: str, checksum: Checksum | None) -> bytes:
    # Names never hold NUL (dd.core.notice.check_name): joined with it, they are unambiguous.
    value = f"{checksum.method}:{checksum.value}" if checksum is not None else ""
    return hashlib.blake2b(f"{rel_path}\0{source}\0{value}".encode(), digest_size=16).digest()


def path_of(cfg: Config, state_dir: Path) -> Path:
    """The index a configuration uses: log_index, else the account's default."""
    return Path(cfg.log_index) if cfg.log_index else Path(state_dir) / DEFAULT_NAME


class Index:
    """The entries, shared through one SQLite file by every process using it."""

    def __init__(self, path: StrPath, *, window: float, limit: int) -> None:
        self.path = os.fspath(path)
        self.window = window
        self.limit = limit
        self._recorded = 0
        self._upstream_ids: dict[Upstream, int] = {}
        self._lock = threading.Lock()
        try:
            # An entry lost in a power cut refuses a log message or two, never routes a forged one.
            self._db = database.open_shared(self.path, _SCHEMA)
            self._migrate()
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the log index {self.path}: {error}",
                              fix="set log_index to a file in a directory this user may write") from None

    def _migrate(self) -> None:
        """An index made before entries named their upstream gets the column (once, whoever
        of the processes sharing it comes first)."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
            if "upstream" not in columns:
                self._db.execute("ALTER TABLE entries ADD COLUMN upstream INTEGER")

    def record(self, entries: Iterable[Entry], now: float | None = None) -> None:
        """Make `entries` matchable from now on, for `window` seconds (a later record of
        the same entry starts its window again)."""
        now = time.time() if now is None else now
        entries = list(entries)
        if not entries:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            rows = [(_key(e.rel_path, e.source, e.checksum),
                     ANYONE if e.readers is None else " ".join(sorted(e.readers)), now,
                     None if e.upstream is None else self._upstream_id(e.upstream)) for e in entries]
            # REPLACE gives a recorded-again entry a new id: it is among the newest again.
            self._db.executemany("INSERT OR REPLACE INTO entries (key, readers, at, upstream) VALUES (?, ?, ?, ?)",
                                 rows)
        before, self._recorded = self._recorded, self._recorded + len(rows)
        if before // PURGE_EVERY != self._recorded // PURGE_EVERY:
            self.purge(now)

    def _upstream_id(self, upstream: Upstream) -> int:
        """The row of `upstream` in upstreams, made if need be; within record's transaction."""
        known = self._upstream_ids.get(upstream)
        if known is None:
            self._db.execute("INSERT OR IGNORE INTO upstreams (broker, exchange) VALUES (?, ?)",
                             (upstream.broker, upstream.exchange))
            known = self._upstream_ids[upstream] = self._db.execute(
                "SELECT id FROM upstreams WHERE broker = ? AND exchange = ?",
                (upstream.broker, upstream.exchange)).fetchone()[0]
        return known

    def match(self, rel_path: str, source: str, checksum: Checksum | None, consumer: str,
              now: float | None = None) -> Match | None:
        """Whether `consumer` may report on the notice of `rel_path`, `source` and `checksum`
        (an entry recorded within the window says so), and if so where its log messages go:
        the upstream of the newest entry that names one."""
        now = time.time() if now is None else now
        with self._lock:
            rows = self._db.execute(
                "SELECT readers, broker, exchange FROM entries LEFT JOIN upstreams ON upstreams.id = upstream "
                "WHERE key = ? AND at > ? ORDER BY entries.id DESC",
                (_key(rel_path, source, checksum), now - self.window)).fetchall()
        if not any(readers == ANYONE or consumer in readers.split() for readers, _, _ in rows):
            return None
        return Match(next((Upstream(broker, exchange) for _, broker, exchange in rows if broker is not None), None))

    def allows(self, rel_path: str, source: str, checksum: Checksum | None, consumer: str,
               now: float | None = None) -> bool:
        """Whether `consumer` may report on the notice of `rel_path`, `source` and `checksum`."""
        return self.match(rel_path, source, checksum, consumer, now) is not None

    def purge(self, now: float | None = None) -> None:
        """Forget entries older than the window, then the oldest beyond `limit`."""
        now = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM entries WHERE at <= ?", (now - self.window,))
            # Ids of replaced entries leave gaps: at most `limit` entries are kept, maybe fewer.
            self._db.execute("DELETE FROM entries WHERE id <= (SELECT max(id) FROM entries) - ?", (self.limit,))

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT count(*) FROM entries").fetchone()[0]
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()    # closing twice is harmless: the post and log steps share one


def of(cfg: Config, state_dir: Path) -> Index:
    """The index a configuration names (log_index, log_index_window, log_index_entries)."""
    return Index(path_of(cfg, state_dir), window=cfg.log_index_window, limit=cfg.log_index_entries)
