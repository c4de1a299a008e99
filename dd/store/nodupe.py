"""Duplicate suppression: a notice already handled recently is not handled again.

The store is an SQLite file shared by every instance and configuration of a
component, so that two feeds of the same product, read by two instances or two
configurations at once, give one delivery and one downstream notice.  A key is
*claimed* (one atomic insert: exactly one claimant wins) before the work, and
*confirmed* only once the work and its announcement are done; a failed one is
*released* so a later copy is handled.  A claim left by a process that died
(kill -9, power loss) is taken over: a crash makes the work happen again rather
than never: a claimant is a process identity (dd.store.pidfile), so a pid reused by another
process, or after a reboot, does not keep the claim.  Confirmed keys expire after `ttl`
seconds and are purged.  A notice's keys are its content at its path (key), and, for a
message that names itself (WIS2), its id and its data_id with pubtime (message_keys): a
duplicate by any of them is a duplicate.

Several hosts share one through Redis instead (dd.store.nodupe_redis): `opened` gives the
one a configuration names, both being a `Claims`.
"""
from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dd.core.errors import StoreUnavailable
from dd.core.notice import Checksum
from dd.store import database, pidfile

if TYPE_CHECKING:
    from _typeshed import StrPath

    from dd.core.credentials import Url
    from dd.core.notice import Notice, Part

#: Expired keys are purged once per this many claims, so the store stays bounded.
PURGE_EVERY = 1000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS claims (
    path BLOB NOT NULL,        -- digest of the key's scope and path: what forget removes
    content BLOB NOT NULL,     -- digest of the rest of the key
    at REAL NOT NULL,          -- when claimed, then when confirmed
    owner TEXT NOT NULL,       -- the claimant's identity, 'pid:start time:boot id'; '' once confirmed
    PRIMARY KEY (path, content)
) WITHOUT ROWID;
-- The purge finds expired keys and open claims through it, not by reading every key: without
-- it a purge read the whole store, and a claim cost 1 ms at a million keys, 10 ms at ten.
CREATE INDEX IF NOT EXISTS claims_by_owner ON claims (owner, at);"""
#: Bytes of each digest: a collision, even one made on purpose, is out of reach.
_DIGEST_SIZE = 16


def key(scope: str, rel_path: str, content: Checksum | str, part: Part | None = None) -> str:
    """The identity of a notice: where it goes (`scope`), its path, its content (a
    checksum, or a link's target) and which part, so parts of a file are not duplicates."""
    if isinstance(content, Checksum):
        content = f"{content.method}:{content.value}"
    fields = [_prefix(scope, rel_path), content]
    if part is not None:
        fields.append(f"{part.block_number}/{part.block_count}:{part.block_size}")
    return "\0".join(fields)


def message_keys(scope: str, notice: Notice) -> list[str]:
    """The identities a message names besides its data (WIS2's): its id, and its data_id
    with its pubtime, so that a copy on another route is a duplicate and a newer pubtime
    an update.  Kept apart from path keys (an empty path): a deletion does not forget them."""
    keys, extra = [], notice.extra
    if isinstance(extra.get("id"), str):
        keys.append(f"{scope}\0\0id:{extra['id']}")
    if isinstance(extra.get("data_id"), str):
        keys.append(f"{scope}\0\0data_id:{extra['data_id']}\0{notice.pubtime.isoformat()}")
    return keys


def _prefix(scope: str, rel_path: str) -> str:
    return f"{scope}\0{rel_path}"


def split(the_key: str) -> tuple[str, str]:
    """(scope and path, the rest) of a key: forget drops every key of one path."""
    scope, rel_path, rest = the_key.split("\0", 2)
    return _prefix(scope, rel_path), rest


def row_of(the_key: str) -> tuple[bytes, bytes]:
    """The (path, content) columns that stand for `the_key` in the SQLite store: fixed-size
    digests keep a row small (keys are 200 bytes and more), so that ten million fit in a
    tree shallow enough to stay in memory."""
    path, rest = split(the_key)
    return _digest(path), _digest(rest)


def _digest(text: str) -> bytes:
    # blake2b, not a faster non-cryptographic hash: a source must not be able to make its
    # notice collide with another's and have that one refused as a duplicate.
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=_DIGEST_SIZE).digest()


class Claims(Protocol):
    """A duplicate store: claim before the work, confirm or release after it."""

    #: True when hosts share it: a scope must then name no local path.
    shared: bool

    def claim(self, the_key: str, now: float | None = None) -> bool: ...

    def claim_each(self, keys: Sequence[str], now: float | None = None) -> Sequence[bool | StoreUnavailable]:
        """Each key's claim at once, in order, as one claim after the other would give them
        (a key twice: the first wins); a key another host has in hand gets Held."""

    def confirm(self, keys: Iterable[str], now: float | None = None) -> None: ...

    def release(self, keys: Iterable[str]) -> None: ...

    def forget(self, scope: str, rel_path: str) -> None: ...

    def purge(self, now: float | None = None) -> None: ...

    def __len__(self) -> int: ...

    def close(self) -> None: ...


def opened(url: Url | None, path: StrPath, ttl: float, namespace: str) -> Claims:
    """The store at `url` (a Redis, keys of `namespace`: a configuration's) or, without
    one, the SQLite file `path` of this host."""
    if url is None:
        return Store(path, ttl)
    from dd.store.nodupe_redis import RedisStore

    return RedisStore(url, ttl, namespace)


class Store:
    """Claims on notice keys, shared through one SQLite file by every process using it."""

    shared = False

    def __init__(self, path: StrPath, ttl: float) -> None:
        self.path = os.fspath(path)
        self.ttl = ttl
        self.owner = pidfile.me()
        # A claim lost in a power cut makes the work happen again, never lost.
        self._db = database.open_shared(self.path, _SCHEMA)
        _migrate(self._db)
        self._lock = threading.Lock()
        self._claims = 0
        self.purge()

    def claim(self, the_key: str, now: float | None = None) -> bool:
        """True when the caller should handle `the_key`: it is new, expired, or was
        claimed by a process that is gone.  False: a duplicate."""
        return self.claim_each([the_key], now)[0]

    def claim_each(self, keys: Sequence[str], now: float | None = None) -> list[bool]:
        """Each key's claim, in one transaction."""
        now = time.time() if now is None else now
        rows = [row_of(k) for k in keys]
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            won = [self._take(path, content, now) for path, content in rows]
        before, self._claims = self._claims, self._claims + sum(won)
        if before // PURGE_EVERY != self._claims // PURGE_EVERY:
            self.purge(now)
        return won

    def _take(self, path: bytes, content: bytes, now: float) -> bool:
        row = self._db.execute("SELECT at, owner FROM claims WHERE path = ? AND content = ?",
                               (path, content)).fetchone()
        if row is not None:
            at, owner = row
            fresh = at > now - self.ttl
            if (owner == "" and fresh) or owner == self.owner or (owner and pidfile.running(owner)):
                return False
        self._db.execute("INSERT OR REPLACE INTO claims (path, content, at, owner) VALUES (?, ?, ?, ?)",
                         (path, content, now, self.owner))
        return True

    def confirm(self, keys: Iterable[str], now: float | None = None) -> None:
        """The work for `keys` is done (and announced): duplicates are refused for ttl from now."""
        now = time.time() if now is None else now
        self._resolve("UPDATE claims SET at = ?, owner = '' WHERE path = ? AND content = ? AND owner = ?",
                      [(now, *row_of(k), self.owner) for k in keys])

    def release(self, keys: Iterable[str]) -> None:
        """The work for `keys` failed or was not announced: a later copy will be handled."""
        self._resolve("DELETE FROM claims WHERE path = ? AND content = ? AND owner = ?",
                      [(*row_of(k), self.owner) for k in keys])

    def forget(self, scope: str, rel_path: str) -> None:
        """Forget every key of a path, claimed or confirmed: it was deleted, and may come back
        as it was."""
        self._resolve("DELETE FROM claims WHERE path = ?", [(_digest(_prefix(scope, rel_path)),)])

    def _resolve(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(statement, rows)

    def purge(self, now: float | None = None) -> None:
        """Forget confirmed keys older than ttl, and claims of processes that are gone."""
        now = time.time() if now is None else now
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM claims WHERE owner = '' AND at <= ?", (now - self.ttl,))
            stale = [(path, content) for path, content, owner
                     in self._db.execute("SELECT path, content, owner FROM claims WHERE owner > ''")
                     if owner != self.owner and not pidfile.running(owner)]
            self._db.executemany("DELETE FROM claims WHERE path = ? AND content = ?", stale)

    def __len__(self) -> int:
        with self._lock:
            count: int = self._db.execute("SELECT count(*) FROM claims").fetchone()[0]
        return count

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _migrate(db: sqlite3.Connection) -> None:
    """Moves the keys of a store made before digests (table `seen`, whole keys) into `claims`,
    once, whichever process opens it first: what it knew stays known."""
    with db:
        db.execute("BEGIN IMMEDIATE")
        if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'seen'").fetchone():
            return
        db.create_function("dd_path", 1, lambda k: _digest(split(k)[0]), deterministic=True)
        db.create_function("dd_content", 1, lambda k: _digest(split(k)[1]), deterministic=True)
        db.execute("INSERT OR REPLACE INTO claims (path, content, at, owner) "
                   "SELECT dd_path(key), dd_content(key), at, owner FROM seen")
        db.execute("DROP TABLE seen")
