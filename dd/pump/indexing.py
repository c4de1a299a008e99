"""What a pump's relay records in the log index (dd.store.logindex) before it publishes:
the notices it announces, and those it ingested, so that no consumer's log message can
arrive before its record; and, for a notice it read from another pump, that pump, where
the log router sends its consumers' log messages."""
from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable
from typing import Optional

from dd.core.credentials import Url
from dd.core.route import owner_of
from dd.flow import Item
from dd.flow.protocols import Context, PostStep
from dd.store import logindex
from dd.store.logindex import Entry, Index, Upstream

log = logging.getLogger("dd.logindex")


class Recording:
    """A post step that records the entries of what it is about to publish, then publishes
    it: what a consumer reports on is in the index before the consumer can have it."""

    def __init__(self, step: PostStep, index: Index, entries_of: Callable[[Item], Iterable[Entry]]) -> None:
        self.step = step
        self.index = index
        self.entries_of = entries_of

    def post(self, items: list[Item]) -> list[Item]:
        try:
            self.index.record(entry for item in items for entry in self.entries_of(item))
        except sqlite3.Error as error:
            # The data must still flow: only these notices' log messages will be refused.
            log.error("log index %s: cannot record %d notice(s): %s; the log router will refuse their "
                      "log messages", self.index.path, len(items), error)
        return self.step.post(items)

    def close(self) -> None:
        try:
            self.step.close()
        finally:
            self.index.close()


def recording(ctx: Context, poster: Optional[PostStep],
              reporter: Optional[PostStep] = None) -> tuple[Optional[Recording], Optional[Recording]]:
    """A relay's post step and log step (either may be None), each recording in the log
    index before it publishes: the post step what it announces, the log step what the
    relay ingested, for the relay's own broker user to report on."""
    cfg = ctx.cfg
    index = logindex.of(cfg, ctx.env.state_dir)
    relay_readers = tuple(cfg.relay_readers or ())
    broker = ctx.credentials.complete(cfg.broker)
    user = broker.user or ""
    pushed_from = ctx.credentials.complete(cfg.report_upstream) if cfg.report_upstream else None
    upstream = upstream_of(cfg.exchange, broker, cfg.post_broker, cfg.report_exchange, pushed_from,
                           cfg.report_upstream_exchange)

    def announcing(item: Item) -> list[Entry]:
        if item.outgoing is None:
            return []
        # What the source posted here goes back to it here, even in a cycle of pumps.
        came_from = upstream if not cfg.cluster or item.outgoing.from_cluster != cfg.cluster else None
        return [logindex.announced(item.outgoing, relay_readers, came_from)]

    def reporting(item: Item) -> list[Entry]:
        # Only what gets a log message: a notice read and acted on.
        if item.notice is None or item.outcome is None:
            return []
        return [logindex.ingested(item.notice, user)]

    return (Recording(poster, index, announcing) if poster is not None else None,
            Recording(reporter, index, reporting) if reporter is not None else None)


def upstream_of(exchange: str, broker: Url, post_broker: Url | None, report_exchange: str,
                pushed_from: Url | None = None, pushed_exchange: str | None = None) -> Upstream | None:
    """The pump a relay reads its notices from, as it reports there (`broker` without its
    password, `report_exchange`), or None when the relay ingests from this very pump: it
    reads a source's own exchange xs_<user>, or the broker it announces on.  A relay of
    notices another pump's sender pushed here (report_upstream, `pushed_from`) names that
    pump, its exchange `pushed_exchange` or xs_<its user>."""
    if pushed_from is not None:
        return Upstream(str(pushed_from), pushed_exchange or f"xs_{pushed_from.user}")
    if owner_of(exchange) is not None or post_broker is None or same_broker(broker, post_broker):
        return None
    return Upstream(str(broker), report_exchange)


def same_broker(one: Url, other: Url) -> bool:
    """Whether two URLs name the same broker and virtual host, whoever logs in."""
    def endpoint(url: Url) -> tuple[str, str, int | None, str]:
        return url.scheme, url.host.lower(), url.port, url.path.strip("/") or "/"
    return endpoint(one) == endpoint(other)
