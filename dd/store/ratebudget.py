"""rate_max as one budget for every process, on every host, of a configuration
(rate_store redis://...): four instances on two nodes move rate_max in all, not four times it.

The budget is the time booked so far, kept in Redis and moved by a Lua script on the
server's clock (one clock for every host): each chunk books its time after the previous
booking, wherever it was copied, as the process's own pace does (dd.transfer.copy).
Redis not answering, the process paces itself alone (at rate_max, so the whole may then
go faster), says so once, and shares the budget again once Redis answers.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from dd.core.errors import StoreUnavailable
from dd.store import redisdb

if TYPE_CHECKING:
    from dd.core.credentials import Url

log = logging.getLogger("dd.rate")

#: Seconds an idle budget may lend to a burst; dd.transfer.copy's RATE_SLACK.
SLACK = 0.1
# ARGV: bytes, rate (bytes/s), slack.  Returns the seconds to wait, as a string (Lua numbers
# come back as integers).  The key outlives its last booking by a minute, then goes.
_BOOK = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1000000
local booked = tonumber(redis.call('GET', KEYS[1]) or '0')
booked = math.max(booked, now - tonumber(ARGV[3])) + tonumber(ARGV[1]) / tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.6f', booked), 'PX', math.ceil((booked - now + 60) * 1000))
return string.format('%.6f', booked - now)
"""


class SharedPace:
    """A dd.transfer.copy.Pace whose bookings are shared through Redis under `name`."""

    def __init__(self, url: Url, name: str, alone: Callable[[int, float], float]) -> None:
        self.url = url
        self.key = f"dd:rate:{name}"
        self.alone = alone          # the process's own pace, while Redis does not answer
        self.db = redisdb.connect(url, "dd-rate")
        self._book = self.db.register_script(_BOOK)
        self._lock = threading.Lock()
        self._failing = False

    def wait_for(self, nbytes: int, rate: float) -> float:
        try:
            with redisdb.answering(self.url, "rate_store"):
                wait = float(self._book(keys=[self.key], args=[nbytes, repr(float(rate)), SLACK]))
        except StoreUnavailable as error:
            with self._lock:
                if not self._failing:
                    log.error("%s; pacing this process alone at rate_max meanwhile", error)
                self._failing = True
            return self.alone(nbytes, rate)
        with self._lock:
            if self._failing:
                log.warning("rate_store %s answers again: rate_max is shared again", self.url)
            self._failing = False
        return wait

    def close(self) -> None:
        self.db.close()
