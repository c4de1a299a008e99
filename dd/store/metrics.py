"""What a running instance did, on disk: written by the instance, read by `dd_ctl status`.

A daemon instance records its flow's counters every INTERVAL seconds and when
it stops, as one JSON file in its configuration's state directory, replaced
atomically so a reader never sees half of it.  Rates per minute come from a
small ring of recent samples kept by the writer.
"""
from __future__ import annotations

import collections
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

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


def sample(counters: Counters, ring: Ring, pid: int, started: float, now: float) -> dict[str, Any]:
    """The record written for one instance: totals, per-minute rates, errors of the last hour."""
    totals = counters.snapshot()
    errors = totals.pop("error_times")
    ring.append((now, totals["received"], totals["posted"]))
    while len(ring) > 2 and now - ring[1][0] >= WINDOW:
        ring.popleft()
    then, received, posted = ring[0]
    return dict(totals, pid=pid, started=started, updated=now,
                received_per_minute=_per_minute(totals["received"] - received, now - then),
                posted_per_minute=_per_minute(totals["posted"] - posted, now - then),
                errors_last_hour=sum(1 for t in errors if now - t < HOUR))


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
                 clock: Callable[[], float] = time.time) -> None:
        self.counters = counters
        self.path = path
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._ring: Ring = collections.deque()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dd-metrics", daemon=True)

    def record(self) -> None:
        write(self.path, sample(self.counters, self._ring, os.getpid(), self.started, self.clock()))

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
