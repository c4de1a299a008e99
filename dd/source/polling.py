"""A remote tree listed on a schedule → notices of what is new, changed or gone.

Every poll_interval the tree below poll_url is walked with the transport's ``entries``
(dd.transfer) and compared, by size and mtime, with what was announced before
(dd.store.polled).  A new or changed file is announced at its remote URL, so
subscribers download it from that server; a file gone is announced deleted.  The poller
never reads a file's content: its notices carry checksum method "none", and receivers
check the size.  Instances and nodes polling the same tree claim each change in the
shared duplicate store (dd.store.nodupe) before announcing it, so only one announces it;
what is announced is recorded once the broker confirmed it (`finish`).
"""
from __future__ import annotations

import logging
import posixpath
import threading
import time
import urllib.parse
from typing import NamedTuple, Optional

from dd.core.errors import PathError, StoreUnavailable, TransferError
from dd.core.notice import Checksum, Notice, Op, from_timestamp, now
from dd.flow import Item
from dd.source.announce import announceable
from dd.store import nodupe
from dd.store.polled import Key, Record
from dd.transfer import Transports

log = logging.getLogger("dd.poll")
BATCH = 1000            # notices per round of confirms
#: How long a claim on a change stops other pollers: longer than a poll of a big tree takes.
CLAIM_TTL = 3600.0
#: What a notice of content that was not read carries (dd.core.checksum): the size is checked.
UNREAD = Checksum("none", "")


class Change(NamedTuple):
    """What finishing an item records: a path announced as (size, mtime), or as deleted
    (None), and the duplicate store's key of that announcement."""

    rel_path: str
    key: Optional[Key]
    claim: str


class PollGatherer:
    """Gathers notices from polls of cfg.poll_url every cfg.poll_interval."""

    def __init__(self, cfg, transports: Transports, polled: Record, claims: nodupe.Claims,
                 stop: threading.Event) -> None:
        self.cfg = cfg
        self.transports = transports
        self.polled = polled
        self.claims = claims
        self.stop = stop
        self.base_url = str(cfg.poll_url).rstrip("/") + "/"
        self.transport, root = transports.for_url(self.base_url)
        self.root = root.rstrip("/") + "/"
        self.scope = polled.source
        self._common = dict(base_url=self.base_url, source=cfg.source or "", from_cluster=cfg.cluster or "",
                            to_clusters=list(cfg.to_clusters or ()))
        self._todo: list[Item] = []
        self._in_flight: dict[int, Item] = {}
        self._next = 0.0            # monotonic time of the next poll
        self._refused: set[str] = set()     # names said to be not announceable

    # -- the gatherer interface ---------------------------------------------

    def fetch(self, timeout: float) -> list[Item]:
        # Items the broker did not confirm: their claims go, and the next poll sees them again.
        self.claims.release(item.receipt.claim for item in self._in_flight.values())
        self._in_flight.clear()
        if not self._todo:
            wait = self._next - time.monotonic()
            if wait > 0:
                self.stop.wait(min(timeout, wait))
                return []
            self._next = time.monotonic() + self.cfg.poll_interval
            self._todo = self._poll()
        items, self._todo = self._todo[:BATCH], self._todo[BATCH:]
        self._in_flight = {id(item): item for item in items}
        return items

    def finish(self, items: list[Item]) -> None:
        done = [self._in_flight.pop(id(item)).receipt for item in items if id(item) in self._in_flight]
        self.polled.record((change.rel_path, change.key) for change in done)
        self.claims.confirm(change.claim for change in done)
        for change in done:
            # The opposite announcement may come again: a file deleted and back as it was.
            self.claims.forget(self._scope_of(None if change.key is not None else (0, 0.0)), change.rel_path)
        if done:
            log.info("announced %d change(s) of %s", len(done), self.base_url)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        self.claims.release(item.receipt.claim for item in self._in_flight.values())
        self.transports.close()
        self.polled.close()
        self.claims.close()

    # -- a poll ---------------------------------------------------------------

    def _poll(self) -> list[Item]:
        started = time.monotonic()
        try:
            listed, unlisted = self._walk()
        except TransferError as error:
            if not self.stop.is_set():
                log.error("cannot list %s", error)       # the error names the URL
            return []
        try:
            first = not self.polled.listed_before()
            if first and self.cfg.poll_first == "skip":
                self.polled.record(listed.items())
                self.polled.mark_listed()
                log.info("first poll of %s: %d file(s) taken as announced (poll_first skip)",
                         self.base_url, len(listed))
                return []
            self.polled.mark_listed()
            known = self.polled.known()
        except StoreUnavailable as error:
            log.error("cannot compare the listing of %s with what was announced: %s", self.base_url, error)
            return []
        changes: list[tuple[str, Optional[Key], Optional[Key]]] = [
            (rel_path, key, None) for rel_path, key in listed.items() if known.get(rel_path) != key]
        changes += [(rel_path, None, known[rel_path]) for rel_path in sorted(set(known) - set(listed))
                    if self._wanted(rel_path) and not rel_path.startswith(unlisted)]
        items = self._claimed(changes)
        log.info("polled %s: %d file(s), %d change(s) (%.1f s)", self.base_url, len(listed), len(items),
                 time.monotonic() - started)
        return items

    def _claimed(self, changes: list[tuple[str, Optional[Key], Optional[Key]]]) -> list[Item]:
        """The items announcing the `changes` (path, key, key it was when deleted) this
        poller claimed; the others are another poller's to announce, or the next poll's."""
        items, held = [], 0
        for start in range(0, len(changes), BATCH):
            batch = [(rel_path, key, self._claim_key(rel_path, key, was))
                     for rel_path, key, was in changes[start:start + BATCH]]
            try:
                verdicts = self.claims.claim_each([claim for _, _, claim in batch])
            except StoreUnavailable as error:
                log.error("%s; %d change(s) of %s left for the next poll", error, len(changes) - start,
                          self.base_url)
                break
            for (rel_path, key, claim), verdict in zip(batch, verdicts):
                if verdict is True:
                    items.append(self._item(rel_path, key, claim))
                held += isinstance(verdict, StoreUnavailable)
        if held:
            log.info("%d change(s) of %s in hand of another poller: looked at again by the next poll",
                     held, self.base_url)
        return items

    def _walk(self) -> tuple[dict[str, Key], tuple[str, ...]]:
        """({rel_path: (size, mtime)} of the wanted files below the root, the directories
        (rel_path/) that could not be listed: what was there is not taken as deleted)."""
        found: dict[str, Key] = {}
        unlisted: list[str] = []
        directories = [""]
        while directories and not self.stop.is_set():
            prefix = directories.pop()
            try:
                entries = self.transport.entries(self.root + prefix)
            except TransferError as error:
                if not prefix:
                    raise
                log.warning("cannot list %s", error)     # the error names the URL
                unlisted.append(prefix)
                continue
            for entry in entries:
                rel_path = prefix + entry.name
                if not self._announceable(rel_path):
                    continue
                if entry.directory:
                    directories.append(rel_path + "/")
                elif self._wanted(rel_path):
                    key = self._key(rel_path, entry.size, entry.mtime)
                    if key is not None:
                        found[rel_path] = key
        if self.stop.is_set():
            raise TransferError(f"{self.base_url}: poll stopped")
        return found, tuple(unlisted)

    def _announceable(self, rel_path: str) -> bool:
        """Whether a notice can carry the name; said once for each that cannot."""
        try:
            announceable(rel_path)
        except PathError as error:
            if rel_path not in self._refused:
                self._refused.add(rel_path)
                log.warning("not announced: %s: %s", self.base_url + rel_path, error)
            return False
        return True

    def _key(self, rel_path: str, size: Optional[int], mtime: Optional[float]) -> Optional[Key]:
        """(size, mtime) of a listed file; what a listing rounds (an Apache page) is asked for."""
        if size is None or mtime is None:
            try:
                stat = self.transport.stat(self.root + rel_path)
            except TransferError as error:
                log.warning("cannot stat %s: %s", self.base_url + urllib.parse.quote(rel_path), error)
                return None
            size, mtime = stat.size, stat.mtime if mtime is None else mtime
        return None if size is None or mtime is None else (size, mtime)

    def _claim_key(self, rel_path: str, key: Optional[Key], was: Optional[Key]) -> str:
        """The duplicate store's key of announcing `rel_path` as `key` (None: deleted, it was `was`)."""
        return nodupe.key(self._scope_of(key), rel_path, "%d %r" % (key or was or (0, 0.0)))

    def _item(self, rel_path: str, key: Optional[Key], claim: str) -> Item:
        """The item announcing `rel_path` as `key` (None: deleted), claimed as `claim`."""
        if key is None:
            notice = Notice(pubtime=now(), rel_path=rel_path, op=Op.DELETE, **self._common)
        else:
            size, mtime = key
            notice = Notice(pubtime=now(), rel_path=rel_path, size=size, checksum=UNREAD,
                            mtime=from_timestamp(mtime), **self._common)
        return Item(notice, receipt=Change(rel_path, key, claim))

    def _scope_of(self, key: Optional[Key]) -> str:
        """Announcements of content and of deletions are claimed apart."""
        return self.scope if key is not None else f"{self.scope} deleted"

    def _wanted(self, rel_path: str) -> bool:
        return self.cfg.match(rel_path) is not None and not posixpath.basename(rel_path).startswith(".")
