"""The provenance store: where each file went, from the log messages the pump's log router routed.

The router (dd_shovel route_logs) keeps every log message it routes here: the relay's
"ingested" and each consumer's "delivered" or "refused, with the rule".  Nothing here
is trusted more than the router trusted it: only log messages the log index matched
(dd.store.logindex) are kept.  The console (dd_ctl web) and dd_log --trace search it.

A file's route is the log messages of one source with one checksum: a relay keeps both
when it announces a file under its own path, so the relay's message about ann's
obs/a.txt and bob's about ann/obs/a.txt are the same file's.  A file without a checksum
is followed by its relative path alone.

One SQLite file (WAL), bounded: messages older than `retention` go, then the oldest
beyond `limit`.
"""
from __future__ import annotations

import dataclasses
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from http import HTTPStatus
from pathlib import Path
from typing import TYPE_CHECKING

from dd.core.errors import ConfigError
from dd.store import database

if TYPE_CHECKING:
    from _typeshed import StrPath

    from dd.core.config import Config
    from dd.core.report import Report

#: The file's name under the state directory when provenance_file is unset.
DEFAULT_NAME = "provenance.sqlite"
#: Messages kept between two purges.
PURGE_EVERY = 1000
#: At most this many rows answer one search.
SEARCH_LIMIT = 512
_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,          -- when the consumer finished (the log message's pubtime)
    rel_path TEXT NOT NULL,
    source TEXT NOT NULL,
    checksum TEXT NOT NULL,    -- method:value, or '' when the notice had none
    consumer TEXT NOT NULL,    -- the broker user that published the log message
    host TEXT NOT NULL,
    component TEXT NOT NULL,
    code INTEGER NOT NULL,
    message TEXT NOT NULL,
    rule TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    duration REAL NOT NULL,
    posted REAL                -- when the source posted the file (the notice's pubtime), NULL if untold
);
CREATE INDEX IF NOT EXISTS events_at ON events (at);
CREATE INDEX IF NOT EXISTS events_file ON events (source, checksum);
"""
_COLUMNS = ("id, at, rel_path, source, checksum, consumer, host, component, code, message, rule, bytes, duration, "
            "posted")


@dataclasses.dataclass(frozen=True)
class Event:
    """One log message the router routed: what one consumer did with one file."""

    id: int
    at: float
    rel_path: str
    source: str
    checksum: str
    consumer: str
    host: str
    component: str
    code: int
    message: str
    rule: str
    bytes: int
    duration: float
    posted: float | None = None

    @property
    def outcome(self) -> str:
        """delivered, refused or failed, as the search and the route name it."""
        return outcome_of(self.code)

    @property
    def started(self) -> float:
        return self.at - self.duration


def outcome_of(code: int) -> str:
    """Done or nothing to do (2xx, 3xx), refused (4xx) or failed (5xx), as dd.core.outcome says."""
    if code < HTTPStatus.BAD_REQUEST:
        return "delivered"
    return "refused" if code < HTTPStatus.INTERNAL_SERVER_ERROR else "failed"


#: What a search's outcome may be.
OUTCOMES = ("delivered", "refused", "failed")
_OUTCOME_SQL = {"delivered": "code < 400", "refused": "code BETWEEN 400 AND 499", "failed": "code >= 500"}


@dataclasses.dataclass(frozen=True)
class Query:
    """A search: each field set narrows it.  `name` is a glob (with * ? [) or a substring."""

    name: str = ""
    source: str = ""
    consumer: str = ""
    outcome: str = ""
    since: float | None = None
    until: float | None = None


@dataclasses.dataclass(frozen=True)
class File:
    """The events of one file (one source, one checksum) among a search's, newest first."""

    events: tuple[Event, ...]

    @property
    def name(self) -> str:
        """The path its source posted: a relay announces it below a directory of its own."""
        return min(self.events, key=lambda e: (len(e.rel_path), e.at)).rel_path

    @property
    def source(self) -> str:
        return self.events[0].source


#: Components that pass a file on from pump to pump: their steps are the pumps' on a route.
RELAYS = frozenset({"sara", "sender", "shovel"})


@dataclasses.dataclass(frozen=True)
class Route:
    """A file's way: taken in on each pump (`hops`), then to each consumer (`deliveries`)."""

    events: tuple[Event, ...]       # the first first

    @property
    def picked_up(self) -> float:
        """When the first step began: the first pump's relay started on the file."""
        return min(e.started for e in self.events)

    @property
    def posted(self) -> float | None:
        """When the source posted the file, if a log message of it said so."""
        return min((e.posted for e in self.events if e.posted is not None), default=None)

    @property
    def start(self) -> float:
        """Where each step's latency counts from: the posting, else the pick-up."""
        posted = self.posted
        return self.picked_up if posted is None else posted

    @property
    def hops(self) -> list[Event]:
        return [e for e in self.events if e.component in RELAYS]

    @property
    def deliveries(self) -> list[Event]:
        return [e for e in self.events if e.component not in RELAYS]

    @property
    def names(self) -> list[str]:
        """The file's paths, the one its source posted first."""
        return sorted({e.rel_path for e in self.events}, key=lambda name: (len(name), name))


def files(events: Iterable[Event]) -> list[File]:
    """`events` grouped by file, in the order of each file's first event among them."""
    grouped: dict[tuple[str, str], list[Event]] = {}
    for event in events:
        grouped.setdefault((event.source, event.checksum or event.rel_path), []).append(event)
    return [File(tuple(group)) for group in grouped.values()]


def path_of(cfg: Config, state_dir: StrPath) -> Path:
    """The store a configuration uses: provenance_file, else the account's default."""
    return Path(cfg.provenance_file) if cfg.provenance_file else Path(state_dir) / DEFAULT_NAME


def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


class Store:
    """The events, shared through one SQLite file by the router (writing) and readers."""

    def __init__(self, path: StrPath, *, retention: float = 7 * 86400, limit: int = 1_000_000) -> None:
        self.path = os.fspath(path)
        self.retention = retention
        self.limit = limit
        self._kept = 0
        self._lock = threading.Lock()
        try:
            # A power cut may lose the last messages kept: a history, not a ledger.
            self._db = database.open_shared(self.path, _SCHEMA)
            _add_posted(self._db)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the provenance store {self.path}: {error}",
                              fix="set provenance_file to a file in a directory this user may write") from None

    def keep(self, reports: Iterable[Report]) -> None:
        """Remember what each routed log message says."""
        rows = [(r.pubtime.timestamp(), r.rel_path, r.source,
                 f"{r.checksum.method}:{r.checksum.value}" if r.checksum is not None else "", r.user, r.host,
                 r.component, r.code, r.message, r.rule, r.bytes, r.duration,
                 r.posted.timestamp() if r.posted is not None else None) for r in reports]
        if not rows:
            return
        with self._lock:
            self._db.executemany(f"INSERT INTO events ({_COLUMNS.partition(', ')[2]}) "
                                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        before, self._kept = self._kept, self._kept + len(rows)
        if before // PURGE_EVERY != self._kept // PURGE_EVERY:
            self.purge()

    def purge(self, now: float | None = None) -> None:
        """Forget events older than the retention, then the oldest beyond the limit."""
        now = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM events WHERE at < ?", (now - self.retention,))
            self._db.execute("DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", (self.limit,))

    def _select(self, where: str, params: list[object], limit: int = SEARCH_LIMIT) -> list[Event]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM events WHERE {where} ORDER BY at DESC, id DESC "
                                    f"LIMIT {int(limit)}", params).fetchall()
        return [Event(*row) for row in rows]

    def search(self, query: Query, *, sources: frozenset[str] | None = None) -> list[Event]:
        """The newest events matching `query`; `sources`: only those of these sources (a
        source's own view), None for all of them."""
        where, params = ["1"], []  # type: tuple[list[str], list[object]]
        if query.name:
            if any(c in query.name for c in "*?["):
                where.append("rel_path GLOB ?")
                params.append(query.name if query.name.startswith("*") else "*" + query.name)
            else:
                where.append("rel_path LIKE ? ESCAPE '\\'")
                params.append(_like(query.name))
        for column in ("source", "consumer"):
            if getattr(query, column):
                where.append(f"{column} = ?")
                params.append(getattr(query, column))
        if query.outcome in _OUTCOME_SQL:
            where.append(_OUTCOME_SQL[query.outcome])
        if query.since is not None:
            where.append("at >= ?")
            params.append(query.since)
        if query.until is not None:
            where.append("at <= ?")
            params.append(query.until)
        if sources is not None:
            where.append(f"source IN ({', '.join('?' * len(sources))})" if sources else "0")
            params.extend(sorted(sources))
        return self._select(" AND ".join(where), params)

    def event(self, event_id: int) -> Event | None:
        found = self._select("id = ?", [event_id], 1)
        return found[0] if found else None

    def route(self, event: Event) -> Route:
        """Every event of `event`'s file, the first first."""
        if event.checksum:
            found = self._select("source = ? AND checksum = ?", [event.source, event.checksum])
        else:
            found = self._select("source = ? AND checksum = '' AND rel_path = ?",
                                 [event.source, event.rel_path])
        return Route(tuple(sorted(found, key=lambda e: (e.at, e.id))))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _add_posted(db: sqlite3.Connection) -> None:
    """Give a store made before posting times were kept their column (NULL in old rows)."""
    if "posted" not in {row[1] for row in db.execute("PRAGMA table_info(events)")}:
        try:
            db.execute("ALTER TABLE events ADD COLUMN posted REAL")
        except sqlite3.OperationalError as error:
            if "duplicate column" not in str(error):  # another process added it meanwhile
                raise


def of(cfg: Config, state_dir: StrPath) -> Store:
    """The store a configuration names (provenance_file, provenance_days, provenance_entries)."""
    return Store(path_of(cfg, state_dir), retention=cfg.provenance_days, limit=cfg.provenance_entries)


def reader(cfg: Config, state_dir: StrPath) -> Store:
    """The store as the console and dd_log --trace read it (the router purges it)."""
    return Store(path_of(cfg, state_dir))
