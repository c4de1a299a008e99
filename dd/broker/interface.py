"""The broker's one interface, whatever the protocol: a Publisher publishes with
confirmation, a Consumer consumes one Subscription with manual acknowledgement; both
connect, reconnect (reopen) and close.  dd.broker.amqp and dd.broker.mqtt implement it.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Optional, Protocol

from dd.core.credentials import Url

if TYPE_CHECKING:
    from dd.broker.amqp import Delivery, Subscription
    from dd.core.formats import Message



class Endpoint(Protocol):
    """A connection to a broker that re-opens itself, on the next of the broker's nodes when it
    names several (dd.broker.failover)."""

    @property
    def url(self) -> Url:
        """The node connected to, or to be tried next."""

    @property
    def connected(self) -> bool:
        """Whether a connection is open now (False between a loss and the reconnection)."""

    @property
    def limits(self) -> str:
        """What the broker connected to cannot do that dd would use, for dd_ctl status; "" for nothing."""

    def open(self) -> Any:
        """Connect if not connected (BrokerError, or BrokerRefusal when retrying cannot help)."""

    def reopen(self, backoff_max: float = 30.0, give_up_after: Optional[float] = None,
               stop: Optional[threading.Event] = None) -> Any:
        """Drop the connection and connect again (see reconnect)."""

    def tick(self) -> None:
        """Serve the connection (heartbeats) while the caller works on something else."""

    def has_exchange(self, exchange: str) -> bool:
        """Whether messages published to `exchange` can be routed (MQTT: always)."""

    def close(self) -> None: ...


class Publisher(Endpoint, Protocol):
    """Publishes persistent messages; the broker's confirmations arrive asynchronously."""

    def publish(self, exchange: str, message: Message, reference: Any = None) -> None:
        """Send `message`; `reference` comes back from wait() if the broker refuses it."""

    def flush(self) -> None:
        """Send now what publishes hold back."""

    def wait(self, timeout: float = 30.0) -> list[Any]:
        """Block until every publish is confirmed; return the references of the refused ones."""

    def forget_pending(self) -> list[Any]:
        """After a lost connection: hand back the references never confirmed."""


class Consumer(Endpoint, Protocol):
    """Consumes one durable subscription with manual acknowledgements."""

    subscription: Subscription

    def declare(self) -> None:
        """Make the subscription exist on the broker, so that messages wait for the consumer."""

    def start(self) -> None:
        """Declare, and start receiving."""

    def fetch(self, timeout: float) -> list[Delivery]:
        """The deliveries that arrive within `timeout` seconds (maybe none)."""

    def ack(self, deliveries: Iterable[Delivery]) -> None:
        """The deliveries are done with; those from an earlier connection are not acked (they come again)."""

    def delete(self) -> None:
        """Remove the subscription and what waits in it."""

