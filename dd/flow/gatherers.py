"""Where a flow's notices come from: a queue on a broker (each message read by a decoder),
and the retry store in front of it."""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Collection
from typing import Optional

from dd import broker
from dd.core import formats
from dd.core.errors import NoticeError
from dd.core.notice import Notice
from dd.core.outcome import Code, Outcome
from dd.flow.item import Item
from dd.flow.protocols import Connected, Gatherer
from dd.store.retry import Entry as RetryEntry
from dd.store.retry import RetryStore

#: How a broker gatherer reads each message.
Decoder = Callable[[broker.Delivery], Item]

log = logging.getLogger("dd.flow")


class BrokerGatherer:
    """Gathers messages from a durable queue, each read by `decode(delivery) -> Item`
    (see notices); finishing an item acks it.  `stop` (the flow's) ends a reconnection.
    A notice the broker delivered more than `delivery_limit` times (0: no limit) is not
    worked on again: it fails (500), so a retry store keeps it, rather than crashing every
    process that takes it from the queue in turn."""

    #: Seconds between tries to consume from a queue no node that answers can serve.
    RETRY_CONSUME = 5.0

    def __init__(self, consumer: broker.Consumer, decode: Decoder, *, stop: threading.Event,
                 delivery_limit: int = 0) -> None:
        self.consumer = consumer
        self.decode = decode
        self.stop = stop
        self.delivery_limit = delivery_limit
        self._started = False

    def fetch(self, timeout: float) -> list[Item]:
        if not self._started:
            self.consumer.start()
            self._started = True
        if not self.consumer.connected:    # the last reconnection could not consume
            self._reconnect()
            return []
        try:
            deliveries = self.consumer.fetch(timeout)
        except broker.CONNECTION_ERRORS as error:
            log.warning("lost the broker connection (%s); reconnecting", error or type(error).__name__)
            self._reconnect()
            return []
        items = [self.decode(d) for d in deliveries]
        if self.delivery_limit:
            for item in items:
                self._limit(item)
        return items

    def _limit(self, item: Item) -> None:
        delivery: broker.Delivery = item.receipt
        if item.outcome is None and delivery.earlier_deliveries >= self.delivery_limit:
            item.outcome = Outcome(Code.FAILED, f"delivered {delivery.earlier_deliveries + 1} times, more than "
                                   f"delivery_limit {self.delivery_limit}: not worked on again from the queue",
                                   "delivery_limit")
            log.error("%s was delivered %d times (delivery_limit %d): the work on it may crash the "
                      "process; it goes to the retry store instead", item.name,
                      delivery.earlier_deliveries + 1, self.delivery_limit)

    def _reconnect(self) -> None:
        if self.consumer.reopen(stop=self.stop) is None:
            return
        try:
            self.consumer.start()
        except broker.CONNECTION_ERRORS as error:
            # A node answered but cannot serve the queue: a classic queue whose node is down.
            log.error("cannot consume from queue %s on %s (%s); trying again in %g s",
                      self.consumer.subscription.queue, self.consumer.url, error or type(error).__name__,
                      self.RETRY_CONSUME)
            self.consumer.close()
            self.stop.wait(self.RETRY_CONSUME)

    @property
    def endpoint(self) -> Optional[broker.Endpoint]:
        return self.consumer if self.consumer.connected else None

    def finish(self, items: list[Item]) -> None:
        try:
            self.consumer.ack([item.receipt for item in items])
        except broker.CONNECTION_ERRORS:
            # Not acked means redelivered: the receiver recognises what it already has.
            log.warning("could not ack %d notice(s); they will be delivered again", len(items))

    def tick(self) -> None:
        # py-amqp is not thread-safe: only the flow's own thread services the connection.
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self.consumer.tick()
        except broker.CONNECTION_ERRORS:
            pass  # noticed and repaired at the next fetch

    def close(self) -> None:
        self.consumer.close()


def notices(*, max_notice_size: int, allowed_schemes: Optional[Collection[str]]) -> Decoder:
    """The decoder of a queue of notices: a refused one becomes an item already done (REFUSED_NOTICE)."""
    def decode(delivery: broker.Delivery) -> Item:
        try:
            notice = formats.decode(delivery.body, delivery.headers, max_size=max_notice_size,
                                    allowed_schemes=allowed_schemes, exchange=delivery.exchange,
                                    topic=delivery.topic)
        except NoticeError as error:
            return Item(None, delivery, Outcome(
                Code.REFUSED_NOTICE, f"refused notice on topic {delivery.topic}: {error}", error.rule))
        except Exception as error:  # noqa: BLE001 - a codec's bug must not stop the flow
            log.exception("internal error decoding a notice on topic %s", delivery.topic)
            return Item(None, delivery,
                        Outcome(Code.FAILED, f"internal error decoding a notice: {error!r}", "internal"))
        return Item(notice, delivery)
    return decode


class Retrying:
    """Wraps a gatherer with a retry store: a notice whose work failed in a way that
    trying again may fix (5xx) is kept in the store, durably, before the broker is
    told it is done; due entries come back into the flow ahead of new notices.
    While the store is full, nothing new is taken from the broker."""

    #: Entries taken from the store per batch.
    BATCH = 100

    def __init__(self, inner: Gatherer, store: RetryStore, *, max_notice_size: int,
                 allowed_schemes: Optional[Collection[str]]) -> None:
        self.inner = inner
        self.store = store
        self.max_notice_size = max_notice_size
        self.allowed_schemes = allowed_schemes
        # The ids of the entries in each batch handed out and not yet finished, oldest first:
        # a pipelined flow fetches before the batch before is finished, whose entries are still due.
        self._out: collections.deque[set[int]] = collections.deque()

    def fetch(self, timeout: float) -> Optional[list[Item]]:
        out = set().union(*self._out)
        entries = [entry for entry in self.store.due(self.BATCH + len(out)) if entry.id not in out][:self.BATCH]
        if entries:
            self.store.postpone(entries)
        items = [self._revive(entry) for entry in entries]
        if self.store.full:
            if not items:
                time.sleep(min(timeout, 1.0))
            return self._handed_out(items)
        batch = self.inner.fetch(0 if items else timeout)
        if batch is None:
            return self._handed_out(items) or None
        return self._handed_out(items + batch)

    def _handed_out(self, items: list[Item]) -> list[Item]:
        if items:
            self._out.append({i.receipt.id for i in items if isinstance(i.receipt, RetryEntry)})
        return items

    def _revive(self, entry: RetryEntry) -> Item:
        try:
            notice = formats.decode(entry.message, max_size=self.max_notice_size,
                                    allowed_schemes=self.allowed_schemes)
        except NoticeError as error:  # the configuration changed since it was kept
            return Item(None, entry,
                        Outcome(Code.REFUSED_NOTICE, f"kept notice {entry.key!r} refused: {error}", error.rule))
        return Item(notice, entry)

    def finish(self, items: list[Item]) -> None:
        fresh = [i for i in items if not isinstance(i.receipt, RetryEntry)]
        failed = [(i.receipt, failure) for i in fresh if (failure := _retryable(i))]
        if failed:
            # On disk before the broker forgets them: this is what makes the ack safe.
            self.store.put([(retry_key(notice), formats.v02.encode(notice)[0], outcome.message)
                            for _, (notice, outcome) in failed])
            for _, (_, outcome) in failed:
                outcome.message += "; kept for retry"
        self.store.remove(retry_key(i.notice) for i in fresh if i.notice is not None and not _retryable(i))
        kept = [(i.receipt, _retryable(i)) for i in items if isinstance(i.receipt, RetryEntry)]
        if self._out:   # finished once per batch, in the order handed out
            self._out.popleft()
        again = [(entry, outcome) for entry, failure in kept if failure for _, outcome in (failure,)]
        self.store.remove(entry.key for entry, failure in kept if not failure)
        given_up = {e.id for e in self.store.failed_again([(entry, o.message) for entry, o in again])}
        for entry, outcome in again:
            attempts = entry.attempts + 1
            if entry.id in given_up:
                outcome.code = Code.GIVEN_UP
                outcome.message += f"; given up after {attempts} attempts (retry_ttl)"
            else:
                outcome.message += f" (attempt {attempts}, kept for retry)"
        self.inner.finish(fresh)

    @property
    def endpoint(self) -> Optional[broker.Endpoint]:
        return self.inner.endpoint if isinstance(self.inner, Connected) else None

    def tick(self) -> None:
        self.inner.tick()

    def close(self) -> None:
        self.inner.close()
        self.store.close()


def retry_key(notice: Notice) -> str:
    """What a retry entry stands for: a path, or one part of it."""
    if notice.part is None:
        return notice.rel_path
    return f"{notice.rel_path}\0part {notice.part.block_number}"


def _retryable(item: Item) -> Optional[tuple[Notice, Outcome]]:
    """The notice and its outcome when the work failed in a way trying again may fix (5xx);
    None otherwise.  Without a notice there is nothing to try again: the message itself
    could not be read."""
    if item.notice is not None and item.outcome is not None and item.outcome.failed:
        return item.notice, item.outcome
    return None
