"""A configuration's steps: its queue, consumer, publishers, post step and log step."""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from typing import Optional

from dd import broker
from dd.core import checksum, formats, paths, report, topic
from dd.core.credentials import Url
from dd.core.errors import ConfigError, NoticeError
from dd.core.notice import Notice, Op
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
                           heartbeat=cfg.heartbeat, instance=ctx.instance,
                           instances=getattr(cfg, "instances", 1),   # dd_log: one process, no option
                           shuffle=cfg.broker_failover == "shuffle",
                           name=f"dd_{cfg.component} {ctx.state.config_name} #{ctx.instance}")


def publisher(ctx: Context, url: Url, role: str = "") -> broker.Publisher:
    """A publisher on `url` (a configured broker URL), named for broker connection lists."""
    cfg = ctx.cfg
    return broker.publisher(ctx.credentials.complete(url), heartbeat=cfg.heartbeat,
                            shuffle=cfg.broker_failover == "shuffle",
                            name=f"dd_{cfg.component} {cfg.name} #{ctx.instance}{role}")


def poster(ctx: Context, exchange: Optional[ExchangeOf] = None, *, confirm_later: bool = False) -> Optional[Poster]:
    """The post step a configuration asks for (post_broker, post_exchange, ...), or None.
    `exchange(item) -> name(s)` routes each item its own way instead of to post_exchange;
    `confirm_later`: see Poster (for a flow whose gatherer finishes nothing on a confirm)."""
    cfg = ctx.cfg
    if not cfg.post_broker:
        return None

    post_format, post_topic_prefix = cfg.post_format, cfg.post_topic_prefix
    post_exchange, post_topic = cfg.post_exchange, None
    if cfg.post_topic:
        post_exchange, post_topic = topic.verbatim(cfg.post_topic)
    wis2 = formats.wis2.Settings(geometry=cfg.wis_geometry, global_cache=cfg.wis_global_cache or "")
    # A WIS2 message names its own exchange and topic, the dataset's: post_topic or post_topic_prefix.
    wis2_topic = cfg.post_topic or post_topic_prefix
    if post_format == formats.wis2.NAME and (wis2_topic or not cfg.broker):
        # Refused at start-up, not on the first file; only a relay has topics to keep.
        if not wis2_topic:
            raise ConfigError("post_format wis2 needs post_topic, the dataset's WIS2 topic",
                              fix="set post_topic origin/a/wis2/<centre-id>/data/core/<discipline>/...")
        try:
            formats.wis2.check_topic(formats.wis2.split_topic(wis2_topic))
        except NoticeError as error:
            raise ConfigError(f"post_topic: {error.message}", fix=error.fix) from None
    inline = post_format == formats.wis2.NAME and cfg.wis_inline and cfg.post_base_dir

    def message_of(item: Item) -> Optional[formats.Message]:
        if item.outgoing is None:
            return None
        if post_format == formats.wis2.NAME:
            content = inline_content(item.outgoing, cfg.post_base_dir) if inline else None
            try:
                return formats.encode(item.outgoing, post_format, wis2_topic, wis2_settings=wis2, content=content)
            except NoticeError as error:
                if error.rule != "wis2-op":
                    raise
                log.warning("not announced: %s", error)  # a link, among the data a WIS2 node announces
                return None
        message = formats.encode(item.outgoing, post_format, post_topic_prefix)
        return message if post_topic is None else dataclasses.replace(message, topic=post_topic)
    return Poster(publisher(ctx, cfg.post_broker), exchange or post_exchange, message_of,
                  timeout=cfg.post_timeout, confirm_later=confirm_later)


def inline_content(notice: Notice, base_dir: str) -> Optional[bytes]:
    """The data of a small file announced below `base_dir`, for a WIS2 message to carry;
    None when it is large, unreadable, or no longer what the notice's checksum says."""
    if (notice.op not in (Op.WRITE, Op.RENAME) or notice.size is None or notice.size > formats.wis2.MAX_CONTENT
            or notice.checksum is None or not checksum.verifiable(notice.checksum.method)):
        return None
    try:
        # Through the safe path builder, never following a link: what is read is below base_dir.
        with paths.Tree(base_dir).parent(notice.rel_path, create=False) as (directory, name):
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
        with os.fdopen(fd, "rb") as file:
            data = file.read(formats.wis2.MAX_CONTENT + 1)
    except (OSError, NoticeError):
        return None
    hasher = checksum.new(notice.checksum.method)
    hasher.update(data)
    return data if hasher.hexdigest() == notice.checksum.value else None


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
