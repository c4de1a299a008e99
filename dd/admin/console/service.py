"""The console as a configuration dd_ctl runs (web/console.conf): started, stopped and
watched with the components' instances, through the same daemon actions.

It offers what dd.components.Component declares; its "flow" serves the console until the
instance is told to stop, and counts the requests it answered as notices received, so
that `dd_ctl status` and the overview show its activity like any other.
"""
from __future__ import annotations

import threading
import time
from typing import Any

from dd.admin.console import app
from dd.admin.console.app import Console

NAME = "web"
DAEMON = True
consumer = None
services = None


def subscription(ctx: Any) -> None:
    """What `start` checks before it starts an instance (the console reads no queue): a
    console that would listen beyond loopback unprotected is refused there and then."""
    app.check(ctx.cfg)


class Requests:
    """The console's counters, in the shape dd.store.metrics records."""

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self._lock = threading.Lock()

    def seen(self) -> None:
        with self._lock:
            self.count += 1
            self.last = time.time()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(received=self.count, posted=0, delivered=0, failed=0, rejected=0, bytes=0,
                        last_activity=self.last, last_received=self.last, last_sent=self.last, error_times=[])


class Serving:
    """What the daemon actions run: the console, until `stop`."""

    def __init__(self, console: Console, counters: Requests, stop: threading.Event) -> None:
        self.console, self.counters, self.stop = console, counters, stop

    def run(self) -> Requests:
        self.console.serve(self.stop)
        return self.counters


def build(ctx: Any) -> Serving:
    counters = Requests()
    return Serving(Console(ctx.cfg, ctx.env, on_request=counters.seen), counters, ctx.stop)
