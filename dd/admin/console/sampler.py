"""The console's sampler: every INTERVAL seconds, each configuration's totals and backlog
into the history (dd.store.history), from a thread of the console's process."""
from __future__ import annotations

import logging
import threading
from typing import Any

from dd.admin.ctl import selection, survey
from dd.core.errors import DDError
from dd.store import history

log = logging.getLogger("dd.console")
INTERVAL = 10.0


def sample(env: Any) -> list[history.Sample]:
    now = env.clock()
    return [history.Sample(now, f"{f.component}/{f.name}", f.files, f.bytes, f.queue_depth)
            for f in survey.survey(selection.select(env, []), env) if not f.error]


class Sampler:
    def __init__(self, store: history.History, env: Any, interval: float = INTERVAL) -> None:
        self.store = store
        self.env = env
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="dd-console-sampler", daemon=True)

    def once(self) -> None:
        try:
            self.store.record(sample(self.env))
        except (DDError, OSError) as error:
            log.warning("history not sampled: %s", error)

    def _loop(self) -> None:
        while True:
            self.once()
            if self._stop.wait(self.interval):
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
