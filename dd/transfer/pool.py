"""Idle connections to one server, kept for the next request of any transfer thread."""
from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

C = TypeVar("C")

#: Idle connections kept per server: one per transfer thread is plenty.
POOL_SIZE = 16


class Idle(Generic[C]):
    """`connect()` makes a connection, `usable(c)` says whether an idle one still is (see
    closed_by_server), `close(c)` drops one and never raises."""

    def __init__(self, connect: Callable[[], C], usable: Callable[[C], bool],
                 close: Callable[[C], None]) -> None:
        self._connect = connect
        self._usable = usable
        self._close = close
        self._idle: list[C] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[C, bool]:
        """(connection, whether it served an earlier request)."""
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                if self._usable(connection):
                    return connection, True
                self._close(connection)
        return self._connect(), False

    def give_back(self, connection: C) -> None:
        with self._lock:
            if len(self._idle) < POOL_SIZE:
                self._idle.append(connection)
                return
        self._close(connection)

    def close(self) -> None:
        with self._lock:
            for connection in self._idle:
                self._close(connection)
            self._idle.clear()


def closed_by_server(sock: socket.socket) -> bool:
    """An idle connection with something to read has been closed (or broken) by the server
    (an FTP server says 421 first)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
