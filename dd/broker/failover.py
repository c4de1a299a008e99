"""Several URLs for one broker, the nodes of a cluster, and which one a connection uses.

A broker option may name several URLs (dd.core.credentials.Url.alternates).  A connection
goes to the first that answers, in the order written or shuffled (broker_failover), and after
a lost connection to the next one: a node that died is not waited for while its peers serve.
When no node answers in a whole round, the next round waits, twice as long each time.  This
knows URLs and connecting, not a protocol: AMQP and MQTT connections use it alike.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Optional, TypeVar

from dd.core.credentials import Url
from dd.core.errors import BrokerError, BrokerRefusal

#: broker_failover's values.
ORDERS = ("order", "shuffle")

T = TypeVar("T")
log = logging.getLogger("dd.broker")


class Endpoints:
    """The URLs of one broker option, and the one in use (`current`)."""

    def __init__(self, url: Url, *, shuffle: bool = False, rng: Optional[random.Random] = None) -> None:
        urls = list(url.every)
        if shuffle:     # instances spread over the nodes instead of all crowding the first
            (rng or random.Random()).shuffle(urls)
        self.urls = tuple(urls)
        self._index = 0

    def __len__(self) -> int:
        return len(self.urls)

    @property
    def current(self) -> Url:
        return self.urls[self._index]

    def advance(self) -> Url:
        """Move on to the next URL (after the last: the first again); return it."""
        self._index = (self._index + 1) % len(self.urls)
        return self.current

    def first_answering(self, connect: Callable[[Url], T]) -> T:
        """`connect(url)` to the current URL, else to the next ones in turn, once round: the
        first connection made (that URL is then current), or the last one's BrokerError.
        A refusal (BrokerRefusal: a login or a certificate) is the same on every node of a
        cluster: it is raised at once."""
        for tried in range(len(self.urls)):
            try:
                return connect(self.current)
            except BrokerRefusal:
                raise
            except BrokerError as error:
                if tried == len(self.urls) - 1:
                    raise
                log.warning("%s; trying %s", error, self.urls[(self._index + 1) % len(self.urls)])
                self.advance()
        raise AssertionError("unreachable: a round ends in a connection or an error")

    def reconnect(self, connect: Callable[[Url], T], *, backoff_max: float = 30.0,
                  give_up_after: Optional[float] = None, stop: Optional[threading.Event] = None,
                  first_delay: float = 0.5) -> Optional[T]:
        """After a lost connection: connect to the next URL, else the ones after it (rounds
        of first_answering, waiting first_delay after the first failed round, twice as long
        after each further one, at most backoff_max).  With `give_up_after` (seconds), the
        last error is raised once that has passed, and a refusal at once; without, a refusal
        is logged and tried again.  None, unconnected, once `stop` is set."""
        delay, started = first_delay, time.monotonic()
        if len(self.urls) > 1:
            self.advance()
        while stop is None or not stop.is_set():
            try:
                return self.first_answering(connect)
            except BrokerError as error:
                if give_up_after is not None and (isinstance(error, BrokerRefusal)
                                                  or time.monotonic() - started + delay > give_up_after):
                    raise
                log.warning("%s; retrying in %.1f s", error, delay)
                if len(self.urls) > 1:
                    self.advance()  # past the round's last: the next round starts where it did
                if stop is None:
                    time.sleep(delay)
                else:
                    stop.wait(delay)
                delay = min(delay * 2, backoff_max)
        return None
