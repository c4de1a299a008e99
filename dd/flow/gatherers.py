"""Where a flow's notices come from: a queue on a broker (each message read by a decoder),
and the retry store in front of it."""
import logging
import threading
import time

from dd import broker
from dd.core import formats
from dd.core.errors import NoticeError
from dd.core.outcome import Code, Outcome
from dd.flow.item import Item
from dd.store.retry import Entry as RetryEntry

log = logging.getLogger("dd.flow")


class BrokerGatherer:
    """Gathers messages from a durable queue, each read by `decode(delivery) -> Item`
    (see notices); finishing an item acks it.  `stop` (the flow's) ends a reconnection."""

    def __init__(self, consumer, decode, *, stop):
        self.consumer = consumer
        self.decode = decode
        self.stop = stop
        self._started = False

    def fetch(self, timeout):
        if not self._started:
            self.consumer.start()
            self._started = True
        try:
            deliveries = self.consumer.fetch(timeout)
        except broker.CONNECTION_ERRORS as error:
            log.warning("lost the broker connection (%s); reconnecting", error or type(error).__name__)
            self._reconnect()
            return []
        return [self.decode(d) for d in deliveries]

    def _reconnect(self):
        if self.consumer.reopen(stop=self.stop) is not None:
            self.consumer.start()

    def finish(self, items):
        try:
            self.consumer.ack([item.delivery for item in items])
        except broker.CONNECTION_ERRORS:
            # Not acked means redelivered: the receiver recognises what it already has.
            log.warning("could not ack %d notice(s); they will be delivered again", len(items))

    def tick(self):
        # py-amqp is not thread-safe: only the flow's own thread services the connection.
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self.consumer.tick()
        except broker.CONNECTION_ERRORS:
            pass  # noticed and repaired at the next fetch

    def close(self):
        self.consumer.close()


def notices(*, max_notice_size, allowed_schemes):
    """The decoder of a queue of notices: a refused one becomes an item already done (REFUSED_NOTICE)."""
    def decode(delivery):
        try:
            notice = formats.decode(delivery.body, delivery.headers, max_size=max_notice_size,
                                    allowed_schemes=allowed_schemes)
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

    def __init__(self, inner, store, *, max_notice_size, allowed_schemes):
        self.inner = inner
        self.store = store
        self.max_notice_size = max_notice_size
        self.allowed_schemes = allowed_schemes

    def fetch(self, timeout):
        items = [self._revive(entry) for entry in self.store.due(self.BATCH)]
        if self.store.full:
            if not items:
                time.sleep(min(timeout, 1.0))
            return items
        batch = self.inner.fetch(0 if items else timeout)
        if batch is None:
            return items or None
        return items + batch

    def _revive(self, entry):
        try:
            notice = formats.decode(entry.message, max_size=self.max_notice_size,
                                    allowed_schemes=self.allowed_schemes)
        except NoticeError as error:  # the configuration changed since it was kept
            return Item(None, entry,
                        Outcome(Code.REFUSED_NOTICE, f"kept notice {entry.key!r} refused: {error}", error.rule))
        return Item(notice, entry)

    def finish(self, items):
        kept = [i for i in items if isinstance(i.delivery, RetryEntry)]
        fresh = [i for i in items if not isinstance(i.delivery, RetryEntry)]
        failed = [i for i in fresh if _retryable(i)]
        if failed:
            # On disk before the broker forgets them: this is what makes the ack safe.
            self.store.put([(retry_key(i.notice), formats.v02.encode(i.notice)[0], i.outcome.message)
                            for i in failed])
            for item in failed:
                item.outcome.message += "; kept for retry"
        self.store.remove(retry_key(i.notice) for i in fresh if i.notice and not _retryable(i))
        again = [i for i in kept if _retryable(i)]
        self.store.remove(i.delivery.key for i in kept if not _retryable(i))
        given_up = {e.id for e in self.store.failed_again([(i.delivery, i.outcome.message) for i in again])}
        for item in again:
            attempts = item.delivery.attempts + 1
            if item.delivery.id in given_up:
                item.outcome.code = Code.GIVEN_UP
                item.outcome.message += f"; given up after {attempts} attempts (retry_ttl)"
            else:
                item.outcome.message += f" (attempt {attempts}, kept for retry)"
        self.inner.finish(fresh)

    def tick(self):
        self.inner.tick()

    def close(self):
        self.inner.close()
        self.store.close()


def retry_key(notice):
    """What a retry entry stands for: a path, or one part of it."""
    if notice.part is None:
        return notice.rel_path
    return f"{notice.rel_path}\0part {notice.part.block_number}"


def _retryable(item):
    # Without a notice there is nothing to try again: the message itself could not be read.
    return item.notice is not None and item.outcome is not None and item.outcome.failed
