"""The post step: publishing one message per item and waiting for the broker's confirms."""
import logging
import time

from dd import broker
from dd.core.errors import BrokerError, BrokerRefusal, NoticeError

log = logging.getLogger("dd.flow")


class Poster:
    """Publishes one message per item, as `message_of(item)` makes it (None: nothing
    to publish), and waits for the broker's confirms."""

    def __init__(self, publisher, exchange, message_of, *, timeout=30.0, confirm_later=False):
        """`exchange`: a name, or `exchange(item) -> name or names` when each item goes its
        own way (a private notice goes to each of its readers' exchanges).
        `confirm_later`: a batch's confirms are waited for at the next post (or at close),
        so the flow works on the next batch meanwhile; for messages nothing waits on,
        such as log messages, published after their notices were acknowledged."""
        self.publisher = publisher
        self.exchange_of = exchange if callable(exchange) else (lambda item: exchange)
        self.message_of = message_of
        self.timeout = timeout
        self.confirm_later = confirm_later
        self._waiting = []       # (item, message) published, confirms not yet waited for

    def post(self, items):
        """Publish every item's message; return the items the broker did not confirm
        (with confirm_later: those of the batch before)."""
        try:
            fresh = [(item, message) for item in items if (message := self.message_of(item)) is not None]
        except NoticeError as error:
            # Not expressible in the chosen format (e.g. sha256 in sr_v02): a config problem.
            raise BrokerError(error.message, fix=error.fix or "choose another post_format or checksum") from None
        if not self.confirm_later:
            return self._confirmed(fresh, published=set())
        refused = self._settle()
        published = set()
        try:
            self._publish(fresh, published)
            self.publisher.flush()
        except (BrokerError, *broker.CONNECTION_ERRORS):
            return refused + self._confirmed(fresh, published)
        self._waiting = fresh
        return refused

    def _settle(self):
        waiting, self._waiting = self._waiting, []
        return self._confirmed(waiting, published={id(item) for item, _ in waiting})

    def _publish(self, pending, published):
        """Publish what of `pending` ((item, message) pairs) is not yet `published` (ids)."""
        for item, message in pending:
            if id(item) not in published:
                exchanges = self.exchange_of(item)
                for exchange in (exchanges,) if isinstance(exchanges, str) else exchanges:
                    self.publisher.publish(exchange, message, item)
                published.add(id(item))

    def _confirmed(self, pending, published):
        """Publish what of `pending` is not yet `published` (ids), wait for every confirm,
        publishing again what a lost connection took; return the items not confirmed."""
        deadline = time.monotonic() + self.timeout
        remaining = pending
        while remaining:
            try:
                self._publish(remaining, published)
                refused = self.publisher.wait(max(deadline - time.monotonic(), 0.1))
                return list({id(item): item for item in refused}.values())
            except (BrokerError, *broker.CONNECTION_ERRORS) as error:
                lost = {id(i) for i in self.publisher.forget_pending()}
                remaining = [(i, m) for i, m in remaining if id(i) in lost or id(i) not in published]
                published.difference_update(id(i) for i, _ in remaining)
                if time.monotonic() >= deadline or isinstance(error, BrokerRefusal):
                    log.error("%s", error)
                    return [i for i, _ in remaining]
                log.warning("publishing failed (%s); reconnecting", error)
                try:
                    self.publisher.reopen(give_up_after=max(deadline - time.monotonic(), 0.1))
                except BrokerError as reopen_error:
                    log.error("%s", reopen_error)
                    return [i for i, _ in remaining]
        return []

    def close(self):
        try:
            unconfirmed = self._settle()
        finally:
            self.publisher.close()
        if unconfirmed:
            log.warning("%d message(s) to %s not confirmed by the broker", len(unconfirmed),
                        self.publisher.url)


class Posters:
    """Several post steps over one batch: each publishes the items it makes a message for."""

    def __init__(self, *posters):
        self.posters = posters

    def post(self, items):
        return [item for poster in self.posters for item in poster.post(items)]

    def close(self):
        for poster in self.posters:
            poster.close()
