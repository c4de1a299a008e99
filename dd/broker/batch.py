"""Confirmed publishing that outlives a lost connection: a Batch of messages is
published, its confirms waited for, and what a lost connection took is
published again on a new one, until a deadline.  At least once: a message
whose confirm the connection took with it may reach the broker twice.
"""
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from dd.broker.amqp import CONNECTION_ERRORS
from dd.broker.interface import Publisher
from dd.core.errors import BrokerError, BrokerRefusal

if TYPE_CHECKING:  # the broker knows messages, never how notices are encoded into them
    from dd.core.formats import Message

log = logging.getLogger("dd.broker")
#: Seconds before publishing again what the broker nacked, doubled after each nack up to the max.
NACK_PAUSE, NACK_PAUSE_MAX = 0.1, 2.0


class Envelope(NamedTuple):
    """One message to publish, and the caller's reference, handed back when it is not confirmed."""

    exchange: str
    message: "Message"
    reference: Any


class Batch:
    """Envelopes published in order on one Publisher, confirmed together.  An object published
    to several exchanges is one reference in several envelopes; references are told apart by
    identity."""

    def __init__(self, publisher: Publisher, envelopes: Iterable[Envelope]) -> None:
        self.publisher = publisher
        self._envelopes = list(envelopes)
        self._published = 0     # how many envelopes, from the front, are published

    def send(self) -> bool:
        """Publish the batch and send it now, without waiting for its confirms (see confirm);
        False when the connection failed meanwhile: confirm() then reconnects and publishes
        again what it took."""
        try:
            self._publish()
            self.publisher.flush()
        except (BrokerError, *CONNECTION_ERRORS):
            return False
        return True

    def confirm(self, timeout: float) -> list[Any]:
        """Publish what is not yet published and wait for every confirm; after a lost
        connection, forget what it took, reconnect (to the broker's next node if it has
        several) and publish that again, and the same with what the broker nacked, until `timeout`
        seconds have passed, or at once on a BrokerRefusal (trying again cannot help).
        Returns the references of the envelopes not confirmed, each once."""
        deadline = time.monotonic() + timeout
        pause = NACK_PAUSE
        while self._envelopes:
            problem: Exception
            try:
                self._publish()
                nacked = self.publisher.wait(max(deadline - time.monotonic(), 0.1))
            except (BrokerError, *CONNECTION_ERRORS) as error:
                lost = {id(reference) for reference in self.publisher.forget_pending()}
                # What was confirmed before the loss stays confirmed; the rest goes again.
                self._envelopes = [envelope for n, envelope in enumerate(self._envelopes)
                                   if id(envelope.reference) in lost or n >= self._published]
                problem = error
            else:
                if not nacked:
                    return []
                # A nack is no loss: right after a queue leader's death, a connection may get
                # every publish nacked until the dead node returns; a new one clears that.
                refused = {id(reference) for reference in nacked}
                self._envelopes = [envelope for envelope in self._envelopes if id(envelope.reference) in refused]
                problem = BrokerError(f"broker {self.publisher.url} refused {len(nacked)} message(s) (nack)")
                # A queue that stays full (x-overflow reject-publish) is asked again gently.
                time.sleep(max(min(pause, deadline - time.monotonic()), 0))
                pause = min(pause * 2, NACK_PAUSE_MAX)
            self._published = 0
            if time.monotonic() >= deadline or isinstance(problem, BrokerRefusal):
                log.error("%s", problem)
                return self._unconfirmed()
            log.warning("publishing failed (%s); reconnecting", problem)
            try:
                self.publisher.reopen(give_up_after=max(deadline - time.monotonic(), 0.1))
            except BrokerError as reopen_error:
                log.error("%s", reopen_error)
                return self._unconfirmed()
        return []

    def _publish(self) -> None:
        for envelope in self._envelopes[self._published:]:
            self.publisher.publish(*envelope)
            self._published += 1

    def _unconfirmed(self) -> list[Any]:
        return _unique(envelope.reference for envelope in self._envelopes)


def _unique(references: Iterable[Any]) -> list[Any]:
    return list({id(reference): reference for reference in references}.values())
