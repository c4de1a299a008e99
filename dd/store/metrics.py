"""What a running instance did, on disk: written by the instance, read by `dd_ctl status`.

A daemon instance records its flow's counters every INTERVAL seconds and when
it stops, as one JSON file in its configuration's state directory, replaced
atomically so a reader never sees half of it.  Rates per minute come from a
small ring of recent samples kept by the writer.  The record also lists the
transfers in flight (Transfers: file, bytes done of total, rate, ETA; read back
with in_flight()), and a transfer's progress counts as activity, so a long
download does not look stalled.  The totals carry over from the instance's
previous record: a restart does not reset files, bytes, errors of the last hour, or the
times of the last notice received and the last file or notice sent.
"""
from __future__ import annotations

import collections
import dataclasses
import itertools
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Protocol

from dd.core import atomic

if TYPE_CHECKING:
    from _typeshed import StrPath

INTERVAL = 5.0
WINDOW = 60.0           # rates are per minute, over the last minute
HOUR = 3600.0


class Counters(Protocol):
    """A flow's counters (dd.flow.loop): totals, and the times of recent errors."""

    def snapshot(self) -> dict[str, Any]: ...


#: (time, received, posted) of recent samples, oldest first.
Ring = collections.deque[tuple[float, int, int]]
#: The totals a restarted instance carries over from its previous record.
CARRIED = ("received", "posted", "delivered", "failed", "rejected", "bytes")
#: The times a restarted instance carries over, so a restart does not hide that nothing came or went.
LATEST = ("last_received", "last_sent")
#: Error times of the last hour kept in the record, so errors/h survives a restart.
ERRORS_KEPT = 1000


class Tracker(Protocol):
    """One transfer's progress."""

    def advance(self, nbytes: int) -> None: ...

    def end(self) -> None: ...


class Progress(Protocol):
    """Where transfers report their progress: the metrics file's registry, a progress bar."""

    def begin(self, name: str, total: Optional[int]) -> Tracker: ...


@dataclasses.dataclass(frozen=True)
class InFlight:
    """A transfer in progress, as the metrics file records it."""

    file: str
    done: int                   # bytes
    total: Optional[int]        # bytes; None: not known
    started: float              # seconds since the epoch
    rate: float                 # bytes/s since it started
    eta: Optional[float]        # seconds left at that rate; None: not known


class _Transfer:
    def __init__(self, registry: Transfers, name: str, total: Optional[int], shown: Optional[Tracker]) -> None:
        self.registry, self.name, self.total, self.shown = registry, name, total, shown
        self.done = 0
        self.started = registry.clock()

    def advance(self, nbytes: int) -> None:
        if self.registry.aborted.is_set():
            # A BaseException: no step takes it for a failed transfer to retry; the temporary
            # file is removed on the way out and the notice is not acknowledged.
            raise KeyboardInterrupt(f"transfer of {self.name} aborted")
        self.done += nbytes
        self.registry.last_progress = self.registry.clock()
        if self.shown is not None:
            self.shown.advance(nbytes)

    def end(self) -> None:
        self.registry.end(self)
        if self.shown is not None:
            self.shown.end()

    def in_flight(self, now: float) -> InFlight:
        span = max(now - self.started, 1e-9)
        rate = self.done / span
        eta = (self.total - self.done) / rate if self.total is not None and rate > 0 else None
        return InFlight(self.name, self.done, self.total, self.started, round(rate, 1),
                        None if eta is None else round(eta, 1))


class Transfers:
    """The transfers of one instance in progress now (a Progress): recorded in its metrics
    file, and shown as well by `display` (a progress bar) when given."""

    def __init__(self, display: Optional[Progress] = None, clock: Callable[[], float] = time.time) -> None:
        self.display = display
        self.clock = clock
        self.last_progress = 0.0
        self.aborted = threading.Event()     # set: every transfer stops at its next chunk
        self._lock = threading.Lock()
        self._now: dict[int, _Transfer] = {}

    def begin(self, name: str, total: Optional[int]) -> Tracker:
        transfer = _Transfer(self, name, total, self.display.begin(name, total) if self.display else None)
        with self._lock:
            self._now[id(transfer)] = transfer
        self.last_progress = self.clock()
        return transfer

    def end(self, transfer: _Transfer) -> None:
        with self._lock:
            self._now.pop(id(transfer), None)

    def in_flight(self) -> list[InFlight]:
        now = self.clock()
        with self._lock:
            return [t.in_flight(now) for t in self._now.values()]

    def abort(self) -> None:
        self.aborted.set()


def in_flight(record: Any) -> list[InFlight]:
    """The transfers in flight of a record that read() returned (none when it has none)."""
    if not isinstance(record, dict):
        return []
    fields = [f.name for f in dataclasses.fields(InFlight)]
    found = []
    for entry in record.get("in_flight") or []:
        if isinstance(entry, dict):
            values: dict[str, Any] = {name: entry.get(name) for name in fields}
            found.append(InFlight(**values))
    return found


def carried(record: Any) -> dict[str, Any]:
    """The totals and recent error times a restarted instance goes on from."""
    if not isinstance(record, dict):
        return {}
    totals = {name: record[name] for name in CARRIED if isinstance(record.get(name), int)}
    totals.update({name: record[name] for name in LATEST if isinstance(record.get(name), (int, float))})
    totals["error_times"] = [t for t in record.get("error_times") or [] if isinstance(t, (int, float))]
    last_error = record.get("last_error")
    if isinstance(last_error, dict):
        totals["last_error"] = last_error
    return totals


def sample(counters: Counters, ring: Ring, pid: int, started: float, now: float, *,
           base: Optional[dict[str, Any]] = None, transfers: Optional[Transfers] = None) -> dict[str, Any]:
    """The record written for one instance: totals (from `base` on), per-minute rates, errors
    of the last hour, the last error, the transfers in flight."""
    totals = counters.snapshot()
    base = base or {}
    for name in CARRIED:
        totals[name] += base.get(name, 0)
    for name in LATEST:
        totals[name] = max(totals[name], base.get(name, 0.0))
    recent = [t for t in itertools.chain(base.get("error_times", ()), totals.pop("error_times"))
              if now - t < HOUR][-ERRORS_KEPT:]
    totals["last_error"] = totals.get("last_error") or base.get("last_error")
    flying = transfers.in_flight() if transfers else []
    if transfers and flying:
        totals["last_activity"] = max(totals["last_activity"], transfers.last_progress)
    ring.append((now, totals["received"], totals["posted"]))
    while len(ring) > 2 and now - ring[1][0] >= WINDOW:
        ring.popleft()
    then, received, posted = ring[0]
    return dict(totals, pid=pid, started=started, updated=now,
                received_per_minute=_per_minute(totals["received"] - received, now - then),
                posted_per_minute=_per_minute(totals["posted"] - posted, now - then),
                errors_last_hour=len(recent), error_times=recent,
                in_flight=[dataclasses.asdict(f) for f in flying])


def _per_minute(count: int, span: float) -> float:
    return round(count * WINDOW / span, 1) if span > 0 else 0.0


def write(path: StrPath, record: object) -> None:
    atomic.replace(path, json.dumps(record))


def read(path: Path) -> Any:
    """The record at `path`, or None when there is none (never started, or unreadable)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class Recorder:
    """Writes `counters` to `path` every `interval` seconds from a thread, and once more on exit."""

    def __init__(self, counters: Counters, path: StrPath, *, interval: float = INTERVAL,
                 clock: Callable[[], float] = time.time, transfers: Optional[Transfers] = None) -> None:
        self.counters = counters
        self.path = path
        self.interval = interval
        self.clock = clock
        self.transfers = transfers
        self.started = clock()
        self._base = carried(read(Path(path)))
        self._ring: Ring = collections.deque()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dd-metrics", daemon=True)

    def record(self) -> None:
        write(self.path, sample(self.counters, self._ring, os.getpid(), self.started, self.clock(),
                                base=self._base, transfers=self.transfers))

    def _loop(self) -> None:
        while not self._done.wait(self.interval):
            try:
                self.record()
            except OSError:
                pass  # a full disk must not stop the flow; the next round tries again

    def __enter__(self) -> Recorder:
        self.record()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        try:
            self.record()
        except OSError:
            pass
