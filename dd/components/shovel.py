"""dd_shovel: messages from a queue to another exchange, never touching data.

By default it copies notices as they are, through subtopic and accept/reject:
a link between pumps or exchanges where the data needs no copy.  With
``route_logs on`` it is a pump's log router: it reads the log messages every
user's consumers publish to xs_<user> (dd_audit binds each of those to
``xreport``), keeps only those published by the very user they name as the
consumer (RabbitMQ vouches for the publisher through user_id; an MQTT broker names
nobody, and there the pump's ACL makes the owner of xs_<user>/ its publisher) and about a
notice this pump relayed to that consumer (dd.store.logindex, which the pump's
relays fill), and copies each to the exchange of the notice's source,
xr_<source>, where only that source may read it, or, when the notice came from
another pump, back to that pump: to the broker and exchange the relay that read
it recorded in the log index, in any topology (a pump fed by several, a chain).
Log messages are never routed to an exchange the pump lacks: the router does not
create exchanges.
"""
import dataclasses
import logging
import sqlite3
import time
from typing import Optional

from dd import broker, flow
from dd.core import options, report, route
from dd.core.credentials import Url
from dd.pump import provenance
from dd.pump.indexing import same_broker
from dd.store import logindex
from dd.core.errors import NoticeError
from dd.flow import Item
from dd.core.formats import Message
from dd.core.notice import USER_NAME
from dd.core.outcome import Code, Outcome

log = logging.getLogger("dd.shovel")

NAME = "shovel"
DAEMON = True
#: How long the router trusts its answer to "does xr_<source> exist?".
EXCHANGE_CHECK_TTL = 60.0

subscription = flow.subscription
consumer = flow.consumer
services = None


def build(ctx):
    cfg = ctx.cfg
    cfg.require("broker", "post_broker")
    if not cfg.route_logs:
        gatherer = flow.BrokerGatherer(consumer(ctx), flow.notices(
            max_notice_size=cfg.max_notice_size, allowed_schemes=None), stop=ctx.stop)
        return flow.Flow(gatherer=gatherer, accept=flow.accept_lines(ctx), work=_forward,
                         poster=flow.poster(ctx), stop=ctx.stop)
    local = flow.publisher(ctx, cfg.post_broker)
    index = logindex.of(cfg, ctx.env.state_dir)
    log.info("routing log messages about the notices recorded in the log index %s within %s", index.path,
             options.format_duration(cfg.log_index_window))
    fallback = None
    if cfg.report_upstream:
        upstream_url = ctx.credentials.complete(cfg.report_upstream)
        fallback = logindex.Upstream(str(upstream_url), cfg.report_upstream_exchange or f"xs_{upstream_url.user}")
    router = _Router(local, cfg.cluster, index, provenance.of(cfg, ctx.env.state_dir), fallback=fallback,
                     here=lambda upstream: same_broker(Url.parse(upstream.broker), cfg.post_broker))
    trusted = frozenset(cfg.report_feeders or ())
    by_exchange = broker.is_mqtt(cfg.broker)
    if by_exchange:
        log.info("an MQTT broker does not say who published a log message: the user of the exchange it "
                 "was read on (xs_<user>/) is taken as its publisher, as the pump's ACL lets only that "
                 "user and the pump's own write there (dd_audit mosquitto)")
    gatherer = flow.BrokerGatherer(consumer(ctx), lambda d: _read_log(d, cfg.max_notice_size, trusted, by_exchange),
                                   stop=ctx.stop)
    posters = flow.Posters(flow.Poster(local, lambda item: item.destination.exchange, _published_to(None),
                                       timeout=cfg.post_timeout),
                           _Upstreams(ctx))
    return flow.Flow(gatherer=gatherer, accept=flow.accept_lines(ctx), work=router.route,
                     poster=posters, stop=ctx.stop)


def _forward(item):
    item.outgoing = item.notice


def _read_log(delivery, max_size, trusted, by_exchange=False):
    """A log message as an item (its Report in the notice's place), or a refusal.  Only
    its consumer may publish it, or a trusted pump forwarding its users' log messages.
    The publisher is the one the broker names (RabbitMQ's user_id) or, `by_exchange` (an
    MQTT broker names nobody), the owner of the exchange it was published on."""
    where = f"log message on topic {delivery.topic}"
    try:
        if len(delivery.body) > max_size:
            raise NoticeError(f"{len(delivery.body)} bytes, over max_notice_size {max_size}", rule="oversized")
        made = report.decode(delivery.body)
    except NoticeError as error:
        return Item(None, delivery, Outcome(Code.REFUSED_NOTICE, f"refused {where}: {error}", error.rule))
    publisher = delivery.user_id
    if by_exchange and not publisher:
        publisher = route.owner_of(delivery.exchange)
        if publisher is None:
            # Read through a wildcard (+/v02/log/#): the router's own copies to xr_<source> come back.
            return Item(made, delivery, skipped=True, refused_by="not on a consumer's exchange xs_<user>")
    if not publisher or (publisher != made.user and publisher not in trusted):
        return Item(None, delivery, Outcome(
            Code.DENIED, f"refused {where} about {made.rel_path!r}: it names consumer {made.user!r} but was "
                         f"published by {publisher or 'a user the broker did not name'}", "forged-log"))
    return Item(made, delivery)


@dataclasses.dataclass(frozen=True)
class _Destination:
    exchange: str                               # on this pump, or on the upstream pump's broker
    upstream: Optional[logindex.Upstream] = None


def _published_to(upstream):
    """The message a poster publishes for an item routed its way (to `upstream`, or this
    pump when None): the log message as it came."""
    def message_of(item):
        if item.destination is None or item.destination.upstream != upstream:
            return None
        delivery = item.receipt
        return Message(delivery.topic, delivery.body, delivery.headers, report.CONTENT_TYPE)
    return message_of


class _Upstreams:
    """The post step toward other pumps: one poster per upstream pump, made when the first
    log message goes its way (the routes are learned from the log index as they come)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.posters = {}       # Upstream -> flow.Poster

    def post(self, items):
        unconfirmed = []
        for upstream in {item.destination.upstream for item in items
                         if item.destination is not None and item.destination.upstream is not None}:
            poster = self.posters.get(upstream)
            if poster is None:
                log.info("log messages toward %s go to its exchange %s", upstream.broker, upstream.exchange)
                poster = self.posters[upstream] = flow.Poster(
                    flow.publisher(self.ctx, Url.parse(upstream.broker), " upstream"), upstream.exchange,
                    _published_to(upstream), timeout=self.ctx.cfg.post_timeout)
            unconfirmed += poster.post(items)
        return unconfirmed

    def close(self):
        for poster in self.posters.values():
            poster.close()


def _summed(checksum):
    """A checksum, short enough for a log line."""
    if checksum is None:
        return "no checksum"
    value = checksum.value if len(checksum.value) <= 16 else checksum.value[:12] + "..."
    return f"{checksum.method}:{value}"


class _Router:
    def __init__(self, publisher, cluster, index, kept, *, fallback, here):
        self.publisher = publisher
        self.cluster = cluster
        self.index = index
        self.kept = kept            # the provenance store: what was routed, for the console (or None)
        self.fallback = fallback    # report_upstream, for notices whose entries name no upstream
        self.here = here            # whether an upstream is this very pump
        self._known = {}            # exchange -> (exists, when asked)

    def route(self, item):
        self._route(item)
        if item.destination is not None and self.kept is not None:
            try:
                self.kept.keep([item.report])
            except sqlite3.Error as error:  # the console's history: routing goes on without it
                log.warning("provenance store %s: %s", self.kept.path, error)

    def _route(self, item):
        made = item.report
        match = self._relayed(item)
        if match is None:
            return
        # The notice came from another pump: log messages go back the way it came.
        upstream = match.upstream if match.upstream is not None and not self.here(match.upstream) else None
        if upstream is None and self.cluster and made.from_cluster not in ("", self.cluster):
            # Its source posted on another cluster, but no relay recorded where the notice came from.
            if self.fallback is None:
                item.outcome = Outcome(
                    Code.NOT_FOUND, f"log message about {made.rel_path!r} not routed: its source is on cluster "
                                    f"{made.from_cluster!r}, the log index names no pump it came from and "
                                    f"report_upstream is unset", "no-route")
                return
            upstream = self.fallback
        if upstream is not None:
            item.destination = _Destination(upstream.exchange, upstream)
            item.outcome = Outcome(Code.DELIVERED, f"log message from {made.user} sent upstream toward "
                                                   f"{made.from_cluster or 'its source'}, to {upstream.broker}")
            return
        exchange = f"xr_{made.source}"
        # Names that could not be a user's are not even asked about.
        if not USER_NAME.fullmatch(made.source) or not self._exists(exchange):
            item.outcome = Outcome(
                Code.NOT_FOUND, f"log message about {made.rel_path!r} not routed: no exchange {exchange} "
                                f"for source {made.source!r} on this pump", "unknown-source")
            return
        item.destination = _Destination(exchange)
        item.outcome = Outcome(Code.DELIVERED, f"log message from {made.user} routed to {exchange}")

    def _relayed(self, item):
        """The log index's match if this pump relayed the notice to the consumer the log
        message names; otherwise None, and the item's outcome says why not."""
        made = item.report
        try:
            match = self.index.match(made.rel_path, made.source, made.checksum, made.user)
        except sqlite3.Error as error:
            item.outcome = Outcome(Code.FAILED, f"log message about {made.rel_path!r} not routed: log index "
                                   f"{self.index.path}: {error}", "log-index")
            return None
        if match is not None:
            return match
        item.outcome = Outcome(
            Code.DENIED, f"refused log message from {made.user} about {made.rel_path!r} (source {made.source}, "
                         f"{_summed(made.checksum)}): this pump relayed no such notice to {made.user} within "
                         f"log_index_window", "forged-log")
        return None

    def _exists(self, exchange):
        known = self._known.get(exchange)
        if known is None or time.monotonic() - known[1] > EXCHANGE_CHECK_TTL:
            known = self._known[exchange] = (self.publisher.has_exchange(exchange), time.monotonic())
        return known[0]
