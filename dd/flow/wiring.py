"""A configuration's steps: its queue, consumer, publishers, post step and log step."""
from __future__ import annotations

import dataclasses
import logging
import socket
from collections.abc import Callable
from typing import Optional

from dd import broker
from dd.core import formats, report, topic
from dd.core.credentials import Url
from dd.core.notice import now as notice_now
from dd.flow.item import Item
from dd.flow.posting import ExchangeOf, Poster
from dd.flow.protocols import Context

log = logging.getLogger("dd.flow")


def accept_lines(ctx: Context) -> Callable[[Item], bool]:
    """The filter step of a configuration's accept and reject lines; what they refuse names
    its rule (item.refused_by) for the log."""
    cfg = ctx.cfg

    def accept(item: Item) -> bool:
        rel_path = item.name
        if cfg.match(rel_path) is not None:
            return True
        item.refused_by = cfg.refusal(rel_path)
        return False
    return accept


def subscription(ctx: Context) -> broker.Subscription:
    """The queue a consuming configuration reads: its name is chosen once and kept."""
    cfg = ctx.cfg
    cfg.require("broker")
    url = ctx.credentials.complete(cfg.broker)
    assert ctx.state is not None, "a consuming configuration has a state directory"
    queue = cfg.queue or ctx.state.queue_name(url.user or "anonymous")
    if cfg.topic:
        exchange, binding = topic.verbatim(cfg.topic)
        bindings: tuple[str, ...] = (binding,)
    else:
        exchange, bindings = cfg.exchange, tuple(topic.binding(cfg.topic_prefix, s) for s in cfg.subtopic)
    return broker.Subscription(queue, exchange, bindings, expire=cfg.expire, message_ttl=cfg.message_ttl,
                               queue_type=cfg.queue_type, stream_offset=cfg.stream_offset)


def consumer(ctx: Context, queue: Optional[broker.Subscription] = None) -> broker.Consumer:
    """The consumer of a configuration's queue (`queue`: its subscription, if not the plain one)."""
    cfg = ctx.cfg
    cfg.require("broker")
    assert ctx.state is not None, "a consuming configuration has a state directory"
    return broker.consumer(ctx.credentials.complete(cfg.broker), queue or subscription(ctx), prefetch=cfg.prefetch,
                           heartbeat=cfg.heartbeat, instance=ctx.instance, shuffle=cfg.broker_failover == "shuffle",
                           name=f"dd_{cfg.component} {ctx.state.config_name} #{ctx.instance}")


def publisher(ctx: Context, url: Url, role: str = "") -> broker.Publisher:
    """A publisher on `url` (a configured broker URL), named for broker connection lists."""
    cfg = ctx.cfg
    return broker.publisher(ctx.credentials.complete(url), heartbeat=cfg.heartbeat,
                            shuffle=cfg.broker_failover == "shuffle",
                            name=f"dd_{cfg.component} {cfg.name} #{ctx.instance}{role}")


def poster(ctx: Context, exchange: Optional[ExchangeOf] = None) -> Optional[Poster]:
    """The post step a configuration asks for (post_broker, post_exchange, ...), or None.
    `exchange(item) -> name(s)` routes each item its own way instead of to post_exchange."""
    cfg = ctx.cfg
    if not cfg.post_broker:
        return None

    post_format, post_topic_prefix = cfg.post_format, cfg.post_topic_prefix
    post_exchange, post_topic = cfg.post_exchange, None
    if cfg.post_topic:
        post_exchange, post_topic = topic.verbatim(cfg.post_topic)

    def message_of(item: Item) -> Optional[formats.Message]:
        if item.outgoing is None:
            return None
        message = formats.encode(item.outgoing, post_format, post_topic_prefix)
        return message if post_topic is None else dataclasses.replace(message, topic=post_topic)
    return Poster(publisher(ctx, cfg.post_broker), exchange or post_exchange, message_of,
                  timeout=cfg.post_timeout)


def reporter(ctx: Context) -> Optional[Poster]:
    """The log step: a log message (dd_log(7)) for each notice acted on, published on the
    broker the notices came from, to report_exchange; None when log_reports is off."""
    cfg = ctx.cfg
    if not (cfg.log_reports and cfg.broker):
        return None
    if not cfg.report_exchange:
        # xs_${BROKER_USER} of an anonymous login (an MQTT broker may allow one).
        log.warning("log messages are not sent: report_exchange is unset and broker %s names no user "
                    "(set report_exchange, or log_reports off)", cfg.broker)
        return None
    consumer = dict(host=socket.gethostname(), user=ctx.credentials.complete(cfg.broker).user or "",
                    component=cfg.component)

    def message_of(item: Item) -> Optional[formats.Message]:
        if item.notice is None or item.outcome is None:
            return None  # not accepted, or unreadable: there is no source to tell
        outcome = item.outcome
        made = report.of(item.notice, code=outcome.code, message=outcome.message, rule=outcome.rule,
                         duration=outcome.duration, nbytes=outcome.nbytes or 0, pubtime=notice_now(),
                         **consumer)
        body, headers = report.encode(made)
        return formats.Message(made.topic, body, headers, report.CONTENT_TYPE)
    return Poster(publisher(ctx, cfg.broker, " reports"), cfg.report_exchange, message_of,
                  timeout=cfg.post_timeout, confirm_later=True)
