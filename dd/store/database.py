"""The SQLite files dd's stores keep (duplicates, hooks due, the log index, retries).

Each is shared by the processes of a configuration or a pump: write-ahead logging lets
them read while one writes, and waiting up to a minute for another's write is normal
under load.  A store keeps one connection, used under its own lock by the flow's
threads, in autocommit mode: each statement is its own transaction.
"""
from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import StrPath


def open_shared(path: StrPath, schema: str, *, synchronous: str = "NORMAL") -> sqlite3.Connection:
    """A connection to the store at `path`, made with `schema` (CREATE ... IF NOT EXISTS)
    if need be.  `synchronous` FULL makes each commit durable before it returns; NORMAL,
    as each store's comment says why, may lose the last ones in a power cut, never
    corrupt the file."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    db = sqlite3.connect(os.fspath(path), timeout=60, isolation_level=None, check_same_thread=False)
    # Turning a new file to WAL takes it whole, and SQLite answers "database is locked" at once,
    # without waiting `timeout`, when another process does the same (routers starting together).
    deadline = time.monotonic() + 60
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.executescript(schema)
    return db
