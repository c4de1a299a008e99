"""A Redis that several hosts share (the duplicate store and the rate budget of a pump on
several nodes): its connection, and its failures as one-line errors that name it.

The URL is redis://[user@]host[:port]/db (rediss:// for TLS); its password comes from
credentials.conf like a broker's, and is never printed.  A dead Redis is a
StoreUnavailable that the caller turns into a retried failure, never into a lost notice.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dd.core.errors import StoreUnavailable

if TYPE_CHECKING:
    import redis

    from dd.core.credentials import Url

#: Seconds to wait for Redis to connect or answer: a pump's flow must not hang on it.
TIMEOUT = 10.0


def connect(url: Url, client_name: str) -> redis.Redis:
    """A client of the Redis `url` names (connected lazily: the first command may fail)."""
    import redis  # only the configurations that name a Redis need the library
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        db = int(url.path.strip("/") or "0")
    except ValueError:
        raise StoreUnavailable(f"{url}: the path must be a database number, like /0",
                               rule="config") from None
    return redis.Redis(host=url.host, port=url.port or 6379, db=db, username=url.user,
                       password=url.password, ssl=url.scheme == "rediss",
                       socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT,
                       client_name=client_name,
                       # Once more at once (a pooled connection Redis closed), no more: a
                       # notice waits for the retry store, not in a loop here.
                       retry=Retry(NoBackoff(), 1))


@contextlib.contextmanager
def answering(url: Url, what: str) -> Iterator[None]:
    """Redis errors inside become one StoreUnavailable naming `what` and the URL."""
    import redis

    try:
        yield
    except redis.RedisError as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise StoreUnavailable(f"{what} {url} unavailable: {reason}",
                               fix="start that Redis, or correct the URL") from None
