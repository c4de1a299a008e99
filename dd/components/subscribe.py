"""dd_subscribe: the end user's tool — a queue on a pump in, a verified mirror out."""
import logging
import os
import shlex
import subprocess

from dd import broker, flow, paths, topic
from dd.flow import Item
from dd.notice import Op
from dd.receive import Outcome, Receiver
from dd.retry import RetryStore
from dd.transfer import SCHEMES, Transports, transport_class

NAME = "subscribe"
DAEMON = True
log = logging.getLogger("dd.subscribe")


def subscription(ctx):
    cfg = ctx.cfg
    cfg.require("broker")
    url = ctx.credentials.complete(cfg.broker)
    queue = cfg.queue or ctx.state.queue_name(url.user or "anonymous")
    bindings = tuple(topic.binding(cfg.topic_prefix, s) for s in cfg.subtopic)
    return broker.Subscription(queue, cfg.exchange, bindings, expire=cfg.expire,
                               message_ttl=cfg.message_ttl)


def consumer(ctx):
    cfg = ctx.cfg
    cfg.require("broker")
    return broker.Consumer(ctx.credentials.complete(cfg.broker), subscription(ctx), prefetch=cfg.prefetch,
                           heartbeat=cfg.heartbeat, name=f"dd_subscribe {ctx.state.config_name} #{ctx.instance}")


def build(ctx):
    cfg = ctx.cfg
    the_consumer = consumer(ctx)
    decoding = dict(max_notice_size=cfg.max_notice_size, allowed_schemes=set(cfg.allowed_schemes))
    store = RetryStore(ctx.state.retry_file(ctx.instance), ttl=cfg.retry_ttl, delay=cfg.retry_delay)
    gatherer = flow.Retrying(flow.BrokerGatherer(the_consumer, **decoding), store, **decoding)
    transports = Transports(ctx.credentials, timeout=cfg.timeout)
    # Import the transports now: the first notice of a burst must not wait for that.
    for scheme in set(cfg.allowed_schemes) & set(SCHEMES):
        transport_class(scheme)
    receiver = Receiver(transports, download_checksum=cfg.checksum, rate_max=cfg.rate_max,
                        fsync=cfg.fsync, tick=gatherer.tick)
    return flow.Flow(gatherer=gatherer, accept=lambda item: _accept(cfg, item),
                     work=lambda item: _work(cfg, receiver, item), poster=flow.poster(ctx),
                     reporter=flow.reporter(ctx),
                     stop=ctx.stop, threads=cfg.threads)


def _accept(cfg, item):
    item.mask = cfg.match(item.notice.rel_path)
    return item.mask is not None


def _work(cfg, receiver, item: Item):
    notice, mask = item.notice, item.mask
    place = dict(strip=mask.strip, mirror=mask.mirror, flatten=mask.flatten)
    try:
        rel_path = paths.localize(notice.rel_path, **place)
        old = paths.localize(notice.rename_from, **place) if notice.op is Op.RENAME else None
    except paths.PathError as error:
        item.outcome = Outcome(403, f"{notice.rel_path!r}: {error}", error.rule)
        return
    tree = paths.Tree(mask.directory)
    item.outcome = receiver.receive(notice, tree, rel_path, old)
    if item.outcome.code == 201 and notice.op in (Op.WRITE, Op.RENAME) and cfg.on_file:
        run_hook(cfg.on_file, item.outcome.local_path, notice)
    flow.derive_outgoing(cfg, item)


def run_hook(command, local_path, notice):
    """on_file: the command, with the file's path as last argument and the notice in DD_* variables."""
    env = dict(os.environ)
    env.update({
        "DD_PATH": local_path, "DD_REL_PATH": notice.rel_path, "DD_URL": notice.url,
        "DD_BASE_URL": notice.base_url, "DD_SIZE": str(notice.size), "DD_SOURCE": notice.source,
        "DD_CHECKSUM": f"{notice.checksum.method}:{notice.checksum.value}",
        "DD_PUBTIME": notice.pubtime.isoformat(), "DD_OP": notice.op.value,
    })
    try:
        result = subprocess.run(shlex.split(command) + [local_path], env=env, stdin=subprocess.DEVNULL,
                                check=False)
    except OSError as error:
        log.error("on_file %s: cannot run: %s", command, error.strerror)
        return
    if result.returncode:
        log.error("on_file %s exited %d for %s", command, result.returncode, local_path)
