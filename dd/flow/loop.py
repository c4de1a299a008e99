"""The flow every component runs: gather → filter → work → post → log.

A component is this loop with a few choices: where notices come from (files
named on the command line, a queue on a broker), what work is done for each
(nothing, or receiving the data), and whether and how the result is announced
again.  The flow joins the broker and the transfers; neither knows the other.
"""
from __future__ import annotations

import collections
import concurrent.futures
import functools
import logging
import resource
import threading
import time
from collections.abc import Callable
from typing import Any, Optional

from dd.core.outcome import Code, Outcome
from dd.flow.item import Item
from dd.flow.protocols import Accept, Connected, Gatherer, PostStep, Prepare, Work

log = logging.getLogger("dd.flow")

#: Seconds a batch's items may wait in all, on the flow's own thread, before the rest of
#: the batch runs on the work threads; below it, one stall would send it there.
WAIT_BEFORE_THREADS = 0.01
#: Batches a pipelined flow hands to its work thread before it works one on its own thread
#: again, to see whether the work still waits.
REMEASURE_AFTER = 8
#: Seconds between services of the broker connection while a batch is worked on.
TICK_INTERVAL = 0.5



def _blocked() -> int:
    """How many times this thread gave up the CPU to wait (I/O, a lock, a sleep), as opposed
    to being preempted."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw


def _timed(call: Callable[[], None]) -> tuple[float, float]:
    """Run `call` on this thread: (CPU seconds, seconds it waited).  Time off the CPU is
    waiting (a server, a disk) only when the thread gave the CPU up itself; preempted only
    (a busy machine), it computed, and that is no reason for another thread."""
    wall, cpu, blocked = time.perf_counter(), time.thread_time(), _blocked()
    call()
    cpu = time.thread_time() - cpu
    return cpu, (time.perf_counter() - wall - cpu if _blocked() > blocked else 0.0)


class Counters:
    """What a flow instance did, for status and for the exit status of one-shot runs."""

    ERRORS_KEPT = 10_000        # times of the latest errors, for "errors in the last hour"

    def __init__(self) -> None:
        self.received = self.posted = self.delivered = self.failed = self.rejected = 0
        self.bytes = 0
        self.broker = ""        # the broker node the flow reads from (or publishes to): "" for none
        self.broker_limits = ""     # what that broker cannot do that dd would use: "" for nothing
        self.last_activity = 0.0
        self.last_received = 0.0    # when the latest notice came in
        self.last_sent = 0.0        # when the latest file was delivered or notice posted
        self.error_times: collections.deque[float] = collections.deque(maxlen=self.ERRORS_KEPT)
        self.last_error: Optional[dict[str, Any]] = None     # time, rel_path, message

    def snapshot(self) -> dict[str, Any]:
        """The totals as a dict, safe to take from another thread."""
        return dict(received=self.received, posted=self.posted, delivered=self.delivered,
                    failed=self.failed, rejected=self.rejected, bytes=self.bytes, broker=self.broker,
                    broker_limits=self.broker_limits,
                    last_activity=self.last_activity, last_received=self.last_received,
                    last_sent=self.last_sent, error_times=list(self.error_times),
                    last_error=self.last_error)


def _lanes(items: list[Item]) -> list[list[Item]]:
    """Items that may run side by side: notices about one path stay in order in one lane,
    and a rename (two paths) keeps the whole batch in one lane."""
    if any(item.notice is not None and item.notice.rename_from is not None for item in items):
        return [items] if items else []
    lanes: dict[str, list[Item]] = {}
    for item in items:
        lanes.setdefault(item.name, []).append(item)
    return list(lanes.values())


class Flow:
    """The loop.  `accept(item) -> bool` filters, `prepare(items)` (optional) starts what is
    done for a batch's accepted items at once, before `work(item)` sets each one's
    item.outcome and item.outgoing; `poster` (optional) announces outgoing notices.

    `pipelined`: while its work waits (a distant server, a slow disk), a batch is worked on
    a thread of its own while this thread gathers the next batch and finishes (posts,
    acknowledges, reports, logs) the one before, for gatherers that may hand out a batch
    before the one before is finished.  While its work computes (small files from a nearby
    server) it stays on this thread: a second thread would only contend for the interpreter
    lock (a quarter slower, and half as much CPU again, measured).  Batches are worked on and
    finished in the order gathered, so notices about one path keep theirs."""

    #: Batches gathered and not yet finished, at most, when pipelined.
    DEPTH = 2

    def __init__(self, *, gatherer: Gatherer, accept: Accept, work: Optional[Work] = None,
                 prepare: Optional[Prepare] = None,
                 poster: Optional[PostStep] = None, reporter: Optional[PostStep] = None,
                 stop: Optional[threading.Event] = None, batch_timeout: float = 1.0, threads: int = 1,
                 pipelined: bool = False) -> None:
        self.gatherer = gatherer
        # Work items of a batch run side by side: transfers and file creation wait on
        # the network and the disk, not on the interpreter.
        self.pool = concurrent.futures.ThreadPoolExecutor(threads) if threads > 1 else None
        self.runner = concurrent.futures.ThreadPoolExecutor(1, "flow-work") if pipelined and work else None
        self._work_waits = False    # whether the latest batch measured waited more than it computed
        self._on_runner = 0         # batches handed to the work thread since
        self.accept = accept
        self.work = work
        self.prepare = prepare
        self.poster = poster
        self.reporter = reporter
        self.stop = stop or threading.Event()
        self.batch_timeout = batch_timeout
        self.counters = Counters()
        # Where the flow meets its broker: the queue it reads, else where it publishes.
        steps: list[object] = [gatherer, poster]
        self._connected: Optional[Connected] = next((s for s in steps if isinstance(s, Connected)), None)
        self.unannounced: list[Item] = []       # the post step's, never confirmed
        self.refused: list[tuple[str, str]] = []  # (what, why): what the gatherer could not even gather
        self._refusals_told: set[Optional[str]] = set()  # the rules whose first refusal was logged at info
        self._in_flight: collections.deque[tuple[list[Item], concurrent.futures.Future[bool]]] = \
            collections.deque()

    def run(self) -> Counters:
        """Process batches until the gatherer is exhausted or stop is set."""
        try:
            while not self.stop.is_set():
                batch = self.gatherer.fetch(0 if self._in_flight else self.batch_timeout)
                if batch is None:
                    break
                if self._connected is not None:
                    endpoint = self._connected.endpoint
                    self.counters.broker = str(endpoint.url) if endpoint else ""
                    self.counters.broker_limits = endpoint.limits if endpoint else ""
                if batch:
                    self._in_flight.append((batch, self._start(batch)))
                # Wait for the oldest batch when the pipeline is full or there is nothing new.
                self._finish_done(wait=len(self._in_flight) >= self.DEPTH or not batch)
            self._settle()
            if self.poster:
                # What a post step confirming later still waits for, confirmed (or not) before the end.
                late = self.poster.post([])
                self.unannounced.extend(late)
                self.counters.posted -= len(late)
        finally:
            for executor in (self.runner, self.pool):
                if executor:
                    executor.shutdown(cancel_futures=True)
            self.gatherer.close()
            for publisher in (self.poster, self.reporter):
                if publisher:
                    publisher.close()
        return self.counters

    def _start(self, batch: list[Item]) -> concurrent.futures.Future[bool]:
        """Filter the batch and start its work: on the work thread when pipelined, here otherwise."""
        counters = self.counters
        counters.received += len(batch)
        counters.last_activity = counters.last_received = time.time()
        todo: list[Item] = []
        for item in batch:
            if item.skipped or item.outcome is not None:
                continue        # skipped or refused by the gatherer already
            if not self.accept(item):
                item.skipped = True
            elif self.work:
                todo.append(item)
        if self.runner and todo and self._work_waits and self._on_runner < REMEASURE_AFTER:
            self._on_runner += 1
            return self.runner.submit(self._work_unless_stopped, todo)
        done: concurrent.futures.Future[bool] = concurrent.futures.Future()
        if self.runner and todo:
            # Batches are worked on in order: what the work thread has goes first.
            while any(not work.done() for _, work in self._in_flight):
                self._finish_done(wait=True)
            self._on_runner = 0
            self._work_waits = self._waits(todo)
        else:
            self._work_batch(todo)
        done.set_result(True)
        return done

    def _waits(self, todo: list[Item]) -> bool:
        """Work on a batch here; whether it waited more than it computed.  Measured only on
        this thread, with the work thread idle: there, waiting for the interpreter lock
        would look like waiting for a server."""
        cpu, waited = _timed(lambda: self._work_batch(todo))
        return waited > max(cpu, WAIT_BEFORE_THREADS)

    def _work_unless_stopped(self, todo: list[Item]) -> bool:
        """Work on a batch, unless a stop came while it waited for the work thread: False then."""
        if self.stop.is_set():
            return False
        self._work_batch(todo)
        return True

    def _finish_done(self, *, wait: bool) -> None:
        """Finish the batches whose work is done, oldest first; with `wait`, wait for the
        oldest, serving the source meanwhile."""
        while self._in_flight:
            batch, work = self._in_flight[0]
            if wait:
                while not work.done():
                    concurrent.futures.wait((work,), timeout=TICK_INTERVAL)
                    self.gatherer.tick()
                wait = False
            elif not work.done():
                return
            self._in_flight.popleft()
            if work.result():
                self._finish(batch)
            else:
                self._left(batch)

    def _settle(self) -> None:
        """The work under way is waited for and finished; at a stop, the work not started is
        left unfinished (not acknowledged, so it comes again)."""
        while self.stop.is_set() and self._in_flight and self._in_flight[-1][1].cancel():
            self._left(self._in_flight.pop()[0])
        while self._in_flight:
            self._finish_done(wait=True)

    @staticmethod
    def _left(batch: list[Item]) -> None:
        log.info("stopping: %d notice(s) left for the next start", len(batch))

    def _work_batch(self, todo: list[Item]) -> None:
        if self.prepare and todo:
            try:
                self.prepare(todo)
            except Exception:   # noqa: BLE001 - each item's work does it for itself instead
                log.exception("internal error preparing a batch of %d", len(todo))
        rest = self._work_while_computing(todo) if self.pool else todo
        lanes = _lanes(rest) if self.pool else [rest]
        if len(lanes) > 1 and self.pool is not None:
            pending = {self.pool.submit(self._work_lane, lane) for lane in lanes}
            while pending:
                _, pending = concurrent.futures.wait(pending, timeout=TICK_INTERVAL)
                self.gatherer.tick()
        else:
            self._work_lane(rest)

    def _finish(self, batch: list[Item]) -> None:
        """Post, then acknowledge (or keep for retry), then report and log a worked batch."""
        counters = self.counters
        if self.poster:
            done = [i for i in batch if not i.skipped and (i.outcome is None or i.outcome.ok)]
            unconfirmed = self.poster.post(done)
            if unconfirmed:
                # Not finished (not acked): they come back and are announced again.
                self.unannounced.extend(unconfirmed)
                held = {id(i) for i in unconfirmed}
                batch = [i for i in batch if id(i) not in held]
            posted = sum(1 for i in done if i.outgoing is not None) - len(unconfirmed)
            counters.posted += posted
            if posted > 0:
                counters.last_sent = time.time()
        self.gatherer.finish(batch)
        if self.reporter:
            unreported = self.reporter.post(batch)
            if unreported:
                log.warning("%d log message(s) not confirmed by the broker; their sources will not "
                            "see these outcomes", len(unreported))
        for item in batch:
            self._log(item)

    def _work_while_computing(self, items: list[Item]) -> list[Item]:
        """Work items here, in order, while they mostly compute; return the rest of them
        once waiting (on a server, a disk, a hook) takes longer than computing: those are
        worth running side by side.  Threads only add interpreter-lock hand-offs to work
        that computes: small files from a nearby server cost twice the CPU on four threads."""
        waited = computed = 0.0
        ticked = time.perf_counter()
        for n, item in enumerate(items):
            cpu, off_cpu = _timed(functools.partial(self._work_one, item))
            computed += cpu
            waited += off_cpu
            now = time.perf_counter()
            if waited > max(computed, WAIT_BEFORE_THREADS):
                return items[n + 1:]
            if now - ticked >= TICK_INTERVAL:   # heartbeats, through a long batch of quick items
                self.gatherer.tick()
                ticked = now
        return []

    def _work_lane(self, items: list[Item]) -> None:
        for item in items:
            self._work_one(item)

    def _work_one(self, item: Item) -> None:
        if self.work is None:
            return
        try:
            self.work(item)
        except Exception as error:  # noqa: BLE001 - one bad item must not stop the flow
            log.exception("internal error on %s", item.name)
            item.outcome = Outcome(Code.FAILED, f"internal error: {error!r}", "internal")

    def _log(self, item: Item) -> None:
        counters, outcome = self.counters, item.outcome
        about = {"rel_path": item.name} if item.payload is not None else {}
        if item.skipped:
            self._log_refusal(item, about)
            return
        if outcome is None:
            return
        if outcome.ok:
            counters.delivered += 1
            counters.last_sent = time.time()
            counters.bytes += outcome.nbytes or 0
            log.info("%d %s: %s (%d bytes, %.3f s)", outcome.code, outcome.message,
                     outcome.local_path or item.name, outcome.nbytes or 0, outcome.duration, extra=about)
        else:
            counters.failed += outcome.failed
            counters.rejected += not outcome.failed
            counters.error_times.append(time.time())
            counters.last_error = {"time": counters.error_times[-1], "rel_path": item.name,
                                   "message": f"{outcome.code} {outcome.message}"}
            log.error("%d %s [%s]", outcome.code, outcome.message, outcome.rule, extra=about)

    def _log_refusal(self, item: Item, about: dict[str, str]) -> None:
        """The first notice each rule refuses at info, so that a pattern refusing what was
        wanted shows; the rest at debug, so that a busy feed does not flood the log."""
        rule = item.refused_by
        why = f" ({rule})" if rule else ""
        if rule in self._refusals_told:
            log.debug("not accepted: %s%s", item.name, why, extra=about)
            return
        self._refusals_told.add(rule)
        log.info("not accepted: %s%s; the other notices it refuses are logged at debug only",
                 item.name, why, extra=about)
