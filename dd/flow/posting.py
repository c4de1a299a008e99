"""The post step: one message per item, to its exchange(s), published with confirms
(dd.broker.Batch holds the policy: reconnecting, publishing again, giving up)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Optional, Union

from dd import broker
from dd.core.errors import BrokerError, NoticeError
from dd.core.formats import Message
from dd.flow.item import Item

#: Where an item's message goes: an exchange, or several (a private notice's readers').
ExchangeOf = Callable[[Item], Union[str, Sequence[str]]]
#: The message an item's post step publishes, or None for nothing.
MessageOf = Callable[[Item], Optional[Message]]

log = logging.getLogger("dd.flow")


class Poster:
    """Publishes one message per item, as `message_of(item)` makes it (None: nothing
    to publish), and waits for the broker's confirms."""

    def __init__(self, publisher: broker.Publisher, exchange: Union[str, ExchangeOf], message_of: MessageOf, *,
                 timeout: float = 30.0, confirm_later: bool = False) -> None:
        """`exchange`: a name, or `exchange(item) -> name or names` when each item goes its
        own way (a private notice goes to each of its readers' exchanges).
        `confirm_later`: a batch's confirms are waited for at the next post (or at close),
        so the flow works on the next batch meanwhile; for messages nothing waits on,
        such as log messages, published after their notices were acknowledged."""
        self.publisher = publisher
        self.exchange_of: ExchangeOf = exchange if callable(exchange) else (lambda item: exchange)
        self.message_of = message_of
        self.timeout = timeout
        self.confirm_later = confirm_later
        self._waiting: Optional[broker.Batch] = None     # the batch published, its confirms not yet waited for

    def post(self, items: list[Item]) -> list[Item]:
        """Publish every item's message; return the items the broker did not confirm
        (with confirm_later: those of the batch before)."""
        try:
            batch = broker.Batch(self.publisher, self._envelopes(items))
        except NoticeError as error:
            # Not expressible in the chosen format (e.g. sha256 in sr_v02): a config problem.
            raise BrokerError(error.message, fix=error.fix or "choose another post_format or checksum") from None
        if not self.confirm_later:
            return batch.confirm(self.timeout)
        refused = self._settle()
        if not batch.send():
            return refused + batch.confirm(self.timeout)
        self._waiting = batch
        return refused

    @property
    def endpoint(self) -> Optional[broker.Endpoint]:
        return self.publisher if self.publisher.connected else None

    def _envelopes(self, items: list[Item]) -> Iterator[broker.Envelope]:
        """An envelope per item and exchange its message goes to."""
        for item in items:
            message = self.message_of(item)
            if message is None:
                continue
            exchanges = message.exchange or self.exchange_of(item)
            for exchange in (exchanges,) if isinstance(exchanges, str) else exchanges:
                yield broker.Envelope(exchange, message, item)

    def _settle(self) -> list[Item]:
        waiting, self._waiting = self._waiting, None
        return waiting.confirm(self.timeout) if waiting is not None else []

    def close(self) -> None:
        try:
            unconfirmed = self._settle()
        finally:
            self.publisher.close()
        if unconfirmed:
            log.warning("%d message(s) to %s not confirmed by the broker", len(unconfirmed),
                        self.publisher.url)


class Posters:
    """Several post steps over one batch: each publishes the items it makes a message for."""

    def __init__(self, *posters: Poster) -> None:
        self.posters = posters

    def post(self, items: list[Item]) -> list[Item]:
        return [item for poster in self.posters for item in poster.post(items)]

    def close(self) -> None:
        for poster in self.posters:
            poster.close()
