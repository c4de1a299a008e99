"""What dd_poll announced of each remote tree, in a Redis that several hosts share
(nodupe_store redis://...): pollers of one tree on any node compare their listings with
the same record, so a node that was down, or new, announces only what changed since the
last announcement by any of them, not everything announced while it was away.

One hash per tree (path → "size mtime") and a key saying it was listed once.  A record
Redis does not take (it is down) is kept and sent again before the next listing is
compared; lost (this poller stopped first), it means those files announced again by the
next poll, never a file missed.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

from dd.core.errors import StoreUnavailable
from dd.store import redisdb
from dd.store.polled import Key

if TYPE_CHECKING:
    from dd.core.credentials import Url

log = logging.getLogger("dd.poll")
PREFIX = "dd:polled:"


class RedisPolled:
    """The files of one source announced so far, in Redis (see the module)."""

    def __init__(self, url: Url, source: str, namespace: str) -> None:
        self.url = url
        self.source = source
        self.files = f"{PREFIX}{namespace}\0{source}".encode()
        self.listed = self.files + b"\0listed"
        self.db = redisdb.connect(url, f"dd-polled-{os.getpid()}")
        self._pending: list[tuple[str, Optional[Key]]] = []
        self._lock = threading.Lock()

    def listed_before(self) -> bool:
        with redisdb.answering(self.url, "nodupe_store"):
            return bool(self.db.exists(self.listed))

    def mark_listed(self) -> None:
        with redisdb.answering(self.url, "nodupe_store"):
            self.db.set(self.listed, b"1")

    def known(self) -> dict[str, Key]:
        self._catch_up()
        found = {}
        with redisdb.answering(self.url, "nodupe_store"):
            # Read in steps, not one HGETALL, so a big tree does not hold up the pump's other
            # users of this Redis (the duplicate store) while it is read.
            for path, value in self.db.hscan_iter(self.files, count=5000):
                size, mtime = value.split()
                found[path.decode()] = (int(size), float(mtime))
        return found

    def record(self, changes: Iterable[tuple[str, Optional[Key]]]) -> None:
        with self._lock:
            self._pending += changes
        try:
            self._catch_up()
        except StoreUnavailable as error:
            log.error("%s; %d announcement(s) kept until it answers", error, len(self._pending))

    def _catch_up(self) -> None:
        with self._lock:
            if not self._pending:
                return
            # One transaction in order: a path announced, then deleted, ends deleted.
            pipe = self.db.pipeline(transaction=True)
            for path, key in self._pending:
                if key is None:
                    pipe.hdel(self.files, path)
                else:
                    pipe.hset(self.files, path, f"{key[0]} {key[1]!r}")
            with redisdb.answering(self.url, "nodupe_store"):
                pipe.execute()
            self._pending.clear()

    def close(self) -> None:
        try:
            self._catch_up()
        except StoreUnavailable as error:
            log.error("%s; %d announcement(s) not recorded: announced again by the next poll",
                      error, len(self._pending))
        self.db.close()
