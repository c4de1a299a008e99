"""The flow every component runs: gather → filter → work → post → log.

A component is this loop with a few choices: where notices come from (files
named on the command line, a queue on a broker), what work is done for each
(nothing, or receiving the data), and whether and how the result is announced
again.  The flow joins the broker and the transfers; neither knows the other.
"""
import collections
import concurrent.futures
import dataclasses
import logging
import socket
import threading
import time
from typing import Callable, Optional

from dd import broker, formats, report, topic
from dd.errors import BrokerError, BrokerRefusal, NoticeError
from dd.notice import Notice
from dd.notice import now as notice_now
from dd.receive import Outcome
from dd.retry import Entry as RetryEntry

log = logging.getLogger("dd.flow")

#: Seconds a batch's items may wait in all, on the flow's own thread, before the rest of
#: the batch runs on the work threads; below it, one stall would send it there.
WAIT_BEFORE_THREADS = 0.01
#: Seconds between services of the broker connection while a batch is worked on.
TICK_INTERVAL = 0.5


@dataclasses.dataclass
class Item:
    """One notice on its way through the flow."""

    notice: Optional[Notice]
    delivery: object = None          # what the gatherer needs to finish it (an AMQP delivery)
    outcome: Optional[Outcome] = None
    outgoing: Optional[Notice] = None  # what the post step announces
    skipped: bool = False            # not accepted by subtopic/accept/reject: no work, no report
    mask: object = None              # the accept line that took it (dd.config.Mask)


class Counters:
    """What a flow instance did, for status and for the exit status of one-shot runs."""

    ERRORS_KEPT = 10_000        # times of the latest errors, for "errors in the last hour"

    def __init__(self):
        self.received = self.posted = self.delivered = self.failed = self.rejected = 0
        self.bytes = 0
        self.last_activity = 0.0
        self.error_times = collections.deque(maxlen=self.ERRORS_KEPT)

    def snapshot(self):
        """The totals as a dict, safe to take from another thread."""
        return dict(received=self.received, posted=self.posted, delivered=self.delivered,
                    failed=self.failed, rejected=self.rejected, bytes=self.bytes,
                    last_activity=self.last_activity, error_times=list(self.error_times))


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
    """The decoder of a queue of notices: a refused one becomes an item already done (400)."""
    def decode(delivery):
        try:
            notice = formats.decode(delivery.body, delivery.headers, max_size=max_notice_size,
                                    allowed_schemes=allowed_schemes)
        except NoticeError as error:
            return Item(None, delivery, Outcome(400, f"refused notice on topic {delivery.topic}: {error}",
                                                error.rule))
        except Exception as error:  # noqa: BLE001 - a codec's bug must not stop the flow
            log.exception("internal error decoding a notice on topic %s", delivery.topic)
            return Item(None, delivery, Outcome(500, f"internal error decoding a notice: {error!r}", "internal"))
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
            return Item(None, entry, Outcome(400, f"kept notice {entry.key!r} refused: {error}", error.rule))
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
                item.outcome.code = 503
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
    return item.notice is not None and item.outcome is not None and item.outcome.code >= 500


class Poster:
    """Publishes one message per item, as `message_of(item)` makes it (None: nothing
    to publish), and waits for the broker's confirms."""

    def __init__(self, publisher, exchange, message_of, *, timeout=30.0, confirm_later=False):
        """`exchange`: a name, or `exchange(item) -> name or names` when each item goes its
        own way (a private notice goes to each of its readers' exchanges).
        `confirm_later`: a batch's confirms are waited for at the next post (or at close),
        so the flow works on the next batch meanwhile; for messages nothing waits on,
        such as log messages, published after their notices were acknowledged."""
        self.publisher = publisher
        self.exchange_of = exchange if callable(exchange) else (lambda item: exchange)
        self.message_of = message_of
        self.timeout = timeout
        self.confirm_later = confirm_later
        self._waiting = []       # (item, message) published, confirms not yet waited for

    def post(self, items):
        """Publish every item's message; return the items the broker did not confirm
        (with confirm_later: those of the batch before)."""
        try:
            fresh = [(item, message) for item in items if (message := self.message_of(item)) is not None]
        except NoticeError as error:
            # Not expressible in the chosen format (e.g. sha256 in sr_v02): a config problem.
            raise BrokerError(error.message, fix=error.fix or "choose another post_format or checksum") from None
        if not self.confirm_later:
            return self._confirmed(fresh, published=set())
        refused = self._settle()
        published = set()
        try:
            self._publish(fresh, published)
            self.publisher.flush()
        except (BrokerError, *broker.CONNECTION_ERRORS):
            return refused + self._confirmed(fresh, published)
        self._waiting = fresh
        return refused

    def _settle(self):
        waiting, self._waiting = self._waiting, []
        return self._confirmed(waiting, published={id(item) for item, _ in waiting})

    def _publish(self, pending, published):
        """Publish what of `pending` ((item, message) pairs) is not yet `published` (ids)."""
        for item, message in pending:
            if id(item) not in published:
                exchanges = self.exchange_of(item)
                for exchange in (exchanges,) if isinstance(exchanges, str) else exchanges:
                    self.publisher.publish(exchange, message, item)
                published.add(id(item))

    def _confirmed(self, pending, published):
        """Publish what of `pending` is not yet `published` (ids), wait for every confirm,
        publishing again what a lost connection took; return the items not confirmed."""
        deadline = time.monotonic() + self.timeout
        remaining = pending
        while remaining:
            try:
                self._publish(remaining, published)
                refused = self.publisher.wait(max(deadline - time.monotonic(), 0.1))
                return list({id(item): item for item in refused}.values())
            except (BrokerError, *broker.CONNECTION_ERRORS) as error:
                lost = {id(i) for i in self.publisher.forget_pending()}
                remaining = [(i, m) for i, m in remaining if id(i) in lost or id(i) not in published]
                published.difference_update(id(i) for i, _ in remaining)
                if time.monotonic() >= deadline or isinstance(error, BrokerRefusal):
                    log.error("%s", error)
                    return [i for i, _ in remaining]
                log.warning("publishing failed (%s); reconnecting", error)
                try:
                    self.publisher.reopen(give_up_after=max(deadline - time.monotonic(), 0.1))
                except BrokerError as reopen_error:
                    log.error("%s", reopen_error)
                    return [i for i, _ in remaining]
        return []

    def close(self):
        try:
            unconfirmed = self._settle()
        finally:
            self.publisher.close()
        if unconfirmed:
            log.warning("%d message(s) to %s not confirmed by the broker", len(unconfirmed),
                        self.publisher.url)


class Posters:
    """Several post steps over one batch: each publishes the items it makes a message for."""

    def __init__(self, *posters):
        self.posters = posters

    def post(self, items):
        return [item for poster in self.posters for item in poster.post(items)]

    def close(self):
        for poster in self.posters:
            poster.close()


def _lanes(items):
    """Items that may run side by side: notices about one path stay in order in one lane,
    and a rename (two paths) keeps the whole batch in one lane."""
    if any(item.notice.rename_from is not None for item in items):
        return [items] if items else []
    lanes = {}
    for item in items:
        lanes.setdefault(item.notice.rel_path, []).append(item)
    return list(lanes.values())


def _name(item):
    return item.notice.rel_path if item.notice else "an undecodable notice"


class Flow:
    """The loop.  `accept(item) -> bool` filters, `work(item)` sets item.outcome and
    item.outgoing, `poster` (optional) announces outgoing notices."""

    def __init__(self, *, gatherer, accept: Callable, work: Optional[Callable] = None,
                 poster: Optional[Poster] = None, reporter: Optional[Poster] = None,
                 stop: Optional[threading.Event] = None, batch_timeout=1.0, threads=1):
        self.gatherer = gatherer
        # Work items of a batch run side by side: transfers and file creation wait on
        # the network and the disk, not on the interpreter.
        self.pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
        self.accept = accept
        self.work = work
        self.poster = poster
        self.reporter = reporter
        self.stop = stop or threading.Event()
        self.batch_timeout = batch_timeout
        self.counters = Counters()
        self.unannounced = []

    def run(self):
        """Process batches until the gatherer is exhausted or stop is set."""
        try:
            while not self.stop.is_set():
                batch = self.gatherer.fetch(self.batch_timeout)
                if batch is None:
                    break
                if batch:
                    self.process(batch)
        finally:
            if self.pool:
                self.pool.shutdown()
            self.gatherer.close()
            for publisher in (self.poster, self.reporter):
                if publisher:
                    publisher.close()
        return self.counters

    def process(self, batch):
        counters = self.counters
        counters.received += len(batch)
        counters.last_activity = time.time()
        todo = []
        for item in batch:
            if item.outcome is None and not self.accept(item):
                item.skipped = True
            elif item.outcome is None and self.work:
                todo.append(item)
        rest = self._work_while_computing(todo) if self.pool else todo
        lanes = _lanes(rest) if self.pool else [rest]
        if len(lanes) > 1:
            pending = {self.pool.submit(self._work_lane, lane) for lane in lanes}
            while pending:
                _, pending = concurrent.futures.wait(pending, timeout=TICK_INTERVAL)
                self.gatherer.tick()
        else:
            self._work_lane(rest)
        if self.poster:
            done = [i for i in batch if not i.skipped and (i.outcome is None or i.outcome.ok)]
            unconfirmed = self.poster.post(done)
            if unconfirmed:
                # Not finished (not acked): they come back and are announced again.
                self.unannounced.extend(unconfirmed)
                held = {id(i) for i in unconfirmed}
                batch = [i for i in batch if id(i) not in held]
            counters.posted += sum(1 for i in done if i.outgoing is not None) - len(unconfirmed)
        self.gatherer.finish(batch)
        if self.reporter:
            unreported = self.reporter.post(batch)
            if unreported:
                log.warning("%d log message(s) not confirmed by the broker; their sources will not "
                            "see these outcomes", len(unreported))
        for item in batch:
            self._log(item)

    def _work_while_computing(self, items):
        """Work items here, in order, while they mostly compute; return the rest of them
        once waiting (on a server, a disk, a hook) takes longer than computing: those are
        worth running side by side.  Threads only add interpreter-lock hand-offs to work
        that computes: small files from a nearby server cost twice the CPU on four threads."""
        waited = computed = 0.0
        ticked = time.perf_counter()
        for n, item in enumerate(items):
            wall, cpu = time.perf_counter(), time.thread_time()
            self._work_one(item)
            now, cpu = time.perf_counter(), time.thread_time() - cpu
            computed += cpu
            waited += now - wall - cpu
            if waited > max(computed, WAIT_BEFORE_THREADS):
                return items[n + 1:]
            if now - ticked >= TICK_INTERVAL:   # heartbeats, through a long batch of quick items
                self.gatherer.tick()
                ticked = now
        return []

    def _work_lane(self, items):
        for item in items:
            self._work_one(item)

    def _work_one(self, item):
        try:
            self.work(item)
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the flow
            log.exception("internal error on %s", _name(item))
            item.outcome = Outcome(500, f"internal error: {error!r}", "internal")

    def _log(self, item):
        counters, outcome = self.counters, item.outcome
        if item.skipped:
            log.debug("not accepted: %s", _name(item))
            return
        if outcome is None:
            return
        if outcome.ok:
            counters.delivered += 1
            counters.bytes += outcome.nbytes or 0
            log.info("%d %s: %s (%d bytes, %.3f s)", outcome.code, outcome.message,
                     outcome.local_path or _name(item), outcome.nbytes or 0, outcome.duration)
        else:
            counters.failed += outcome.code >= 500
            counters.rejected += outcome.code < 500
            counters.error_times.append(time.time())
            log.error("%d %s [%s]", outcome.code, outcome.message, outcome.rule)


def subscription(ctx):
    """The queue a consuming configuration reads: its name is chosen once and kept."""
    cfg = ctx.cfg
    cfg.require("broker")
    url = ctx.credentials.complete(cfg.broker)
    queue = cfg.queue or ctx.state.queue_name(url.user or "anonymous")
    bindings = tuple(topic.binding(cfg.topic_prefix, s) for s in cfg.subtopic)
    return broker.Subscription(queue, cfg.exchange, bindings, expire=cfg.expire, message_ttl=cfg.message_ttl)


def consumer(ctx, queue=None):
    """The consumer of a configuration's queue (`queue`: its subscription, if not the plain one)."""
    cfg = ctx.cfg
    cfg.require("broker")
    return broker.Consumer(ctx.credentials.complete(cfg.broker), queue or subscription(ctx), prefetch=cfg.prefetch,
                           heartbeat=cfg.heartbeat, name=f"dd_{cfg.component} {ctx.state.config_name} #{ctx.instance}")


def publisher(ctx, url, role=""):
    """A publisher on `url` (a configured broker URL), named for broker connection lists."""
    cfg = ctx.cfg
    return broker.Publisher(ctx.credentials.complete(url), heartbeat=cfg.heartbeat,
                            name=f"dd_{cfg.component} {cfg.name} #{ctx.instance}{role}")


def poster(ctx, exchange=None):
    """The post step a configuration asks for (post_broker, post_exchange, ...), or None.
    `exchange(item) -> name(s)` routes each item its own way instead of to post_exchange."""
    cfg = ctx.cfg
    if not cfg.post_broker:
        return None

    post_format, post_topic_prefix = cfg.post_format, cfg.post_topic_prefix

    def message_of(item):
        if item.outgoing is None:
            return None
        return formats.encode(item.outgoing, post_format, post_topic_prefix)
    return Poster(publisher(ctx, cfg.post_broker), exchange or cfg.post_exchange, message_of,
                  timeout=cfg.post_timeout)


def reporter(ctx):
    """The log step: a log message (dd_log(7)) for each notice acted on, published on the
    broker the notices came from, to report_exchange; None when log_reports is off."""
    cfg = ctx.cfg
    if not (cfg.log_reports and cfg.broker):
        return None
    consumer = dict(host=socket.gethostname(), user=ctx.credentials.complete(cfg.broker).user or "",
                    component=cfg.component)

    def message_of(item):
        if item.notice is None or item.outcome is None:
            return None  # not accepted, or unreadable: there is no source to tell
        outcome = item.outcome
        made = report.of(item.notice, code=outcome.code, message=outcome.message, rule=outcome.rule,
                         duration=outcome.duration, nbytes=outcome.nbytes or 0, pubtime=notice_now(),
                         **consumer)
        body, headers = report.encode(made)
        return formats.Message(made.topic, body, headers, report.CONTENT_TYPE)
    return Poster(publisher(ctx, cfg.broker, " reports"), cfg.report_exchange, message_of,
                  timeout=cfg.post_timeout, confirm_later=True)

