"""Delivery: the work of the components that download (dd_subscribe, dd_sara).

A queue on a broker in; each accepted notice placed in its tree (dd.paths),
received (dd.receive), handed to on_file (dd.hooks), and announced again when
posting is configured.  Duplicates (dd.nodupe) are refused before any download,
and their keys are recorded only once the delivery and its announcement are
confirmed.

The two users differ in one choice, `relay`: dd_subscribe announces its copy
as a new notice of its own, while dd_sara relays the original notice (its
checksum, source, publication time and clusters) from its own data server.
"""
import dataclasses
import logging
import os
import urllib.parse

from dd import checksum, flow, hooks, nodupe, paths, private, route
from dd.flow import Item
from dd.notice import Op
from dd.notice import now as notice_now
from dd.receive import Outcome, Receiver
from dd.retry import RetryStore
from dd.transfer import SCHEMES, Transports, transport_class

log = logging.getLogger("dd.deliver")


subscription = flow.subscription
consumer = flow.consumer


def build(ctx, *, relay=False, htpasswd=None):
    """The flow of a downloading component: consume, place, receive, announce."""
    cfg = ctx.cfg
    decoding = dict(max_notice_size=cfg.max_notice_size, allowed_schemes=set(cfg.allowed_schemes))
    retries = RetryStore(ctx.state.retry_file(ctx.instance), ttl=cfg.retry_ttl, delay=cfg.retry_delay)
    decode = flow.notices(**decoding)
    gatherer = flow.Retrying(flow.BrokerGatherer(consumer(ctx), ingest(decode, cfg.cluster) if relay else decode,
                                                 stop=ctx.stop), retries, **decoding)
    transports = Transports(ctx.credentials, timeout=cfg.timeout)
    # Import the transports now: the first notice of a burst must not wait for that.  Not
    # sftp's: paramiko takes 0.15 s to import, about what its first SSH handshake takes anyway.
    for scheme in set(cfg.allowed_schemes) & set(SCHEMES) - {"sftp"}:
        transport_class(scheme)
    receiver = Receiver(transports, download_checksum=cfg.checksum, rate_max=cfg.rate_max,
                        fsync=cfg.fsync, tick=gatherer.tick, stale_after=cfg.retry_ttl)
    if cfg.on_file:
        hook = hooks.Hook(cfg.on_file, timeout=cfg.on_file_timeout, tick=gatherer.tick, stop=ctx.stop)
        due = hooks.DueStore(ctx.state.hooks_file(), cfg.retry_ttl)
        receiver = hooks.Hooked(receiver, hook, due, retry=cfg.on_file_failure == "retry")
    store = nodupe.Store(ctx.state.shared_file("nodupe.sqlite"), cfg.nodupe_ttl) if cfg.nodupe_ttl else None
    delivery = Delivery(cfg, receiver, relay=relay, store=store, htpasswd=htpasswd)
    return flow.Flow(gatherer=gatherer, accept=delivery.accept, work=delivery.work,
                     poster=Recorder(flow.poster(ctx), delivery), reporter=flow.reporter(ctx),
                     stop=ctx.stop, threads=cfg.threads)


def ingest(decode, cluster):
    """A relay's identity rule, around a notice decoder: a notice read from a user's own
    exchange xs_<user> is that user's, whatever its body says, and enters the network
    here.  Only the broker's word counts: the exchange is writable by that user alone
    (and the pump's feeders)."""
    def read(delivery):
        item = decode(delivery)
        owner = route.owner_of(delivery.exchange)
        notice = item.notice
        if notice is not None and owner is not None:
            if notice.source not in ("", owner) or notice.from_cluster not in ("", cluster or ""):
                log.warning("%s: source %r and from_cluster %r replaced by %r and %r, as read from %s",
                            notice.rel_path, notice.source, notice.from_cluster, owner, cluster or "",
                            delivery.exchange)
            notice.source, notice.from_cluster = owner, cluster or ""
        return item
    return read


class Delivery:
    """accept and work for the flow, with the duplicate claims made on the way."""

    def __init__(self, cfg, receiver, *, relay, store=None, htpasswd=None):
        self.cfg = cfg
        self.receiver = receiver
        self.relay = relay
        self.store = store
        self.htpasswd = htpasswd    # a pump's: private data goes under private/<readers>/
        self.claims = {}            # id(item) -> nodupe key, for this batch

    def accept(self, item):
        notice = item.notice
        if self.relay and not route.reachable(notice, self.cfg.cluster, self.cfg.gateway_for or ()):
            log.debug("not for this way: %s is for %s", notice.rel_path, ", ".join(notice.to_clusters))
            return False
        item.mask = self.cfg.match(notice.rel_path)
        return item.mask is not None

    def _claim(self, item):
        """False for a duplicate.  Claimed in the item's lane, after the notices before it
        about the same path (a delete in between makes the same content new again)."""
        key = self._key(item)
        if key is None:
            return True
        if not self.store.claim(key):
            return False
        self.claims[id(item)] = key
        return True

    def _key(self, item):
        notice = item.notice
        if self.store is None or notice.op is Op.DELETE:
            return None
        content = notice.checksum if notice.op is not Op.LINK else f"link:{notice.link_target}"
        return nodupe.key(self._scope(item), notice.rel_path, content, notice.part)

    @staticmethod
    def _scope(item):
        return os.path.abspath(item.mask.directory)

    def work(self, item: Item):
        notice, mask = item.notice, item.mask
        place = dict(strip=mask.strip, mirror=mask.mirror, flatten=mask.flatten)
        try:
            rel_path = paths.localize(notice.rel_path, **place)
            old = paths.localize(notice.rename_from, **place) if notice.op is Op.RENAME else None
        except paths.PathError as error:
            item.outcome = Outcome(403, f"{notice.rel_path!r}: {error}", error.rule)
            return
        host = urllib.parse.urlsplit(notice.base_url).hostname or ""
        if self.cfg.allowed_hosts and host not in self.cfg.allowed_hosts:
            item.outcome = Outcome(403, f"{notice.url}: host {host!r} is not in allowed_hosts", "host")
            return
        if self.htpasswd is not None and notice.readers:
            self.htpasswd.allow(notice.readers)
            where = private.prefix(notice.readers)
            rel_path = f"{where}/{rel_path}"
            old = f"{where}/{old}" if old else None
        if not self._claim(item):
            item.outcome = Outcome(304, "duplicate (seen within nodupe_ttl)")
            return
        item.outcome = self.receiver.receive(notice, paths.Tree(mask.directory), rel_path, old)
        code = item.outcome.code
        if code in (201, 304) and notice.op is Op.DELETE and self.store:
            # The path may now be created again with the same content: not a duplicate.
            self.store.forget(self._scope(item), notice.rel_path)
        if self.announces(item):
            derive_outgoing(self.cfg, item, relay=self.relay)

    def announces(self, item):
        """201: done now.  A relay also announces 304, found in place and verified, so that
        a crash between the rename and the broker's confirm announces it late, not never;
        but a part found in place says nothing of the whole file, a delete found done is no news."""
        code, notice = item.outcome.code, item.notice
        return code == 201 or (self.relay and code == 304 and notice.part is None
                               and notice.op is not Op.DELETE)

    def close(self):
        self.receiver.close()
        if self.store:
            self.store.close()


class Recorder:
    """The post step, then the duplicate store: a key is recorded once its notice is
    confirmed downstream (or needed no announcement), released otherwise."""

    def __init__(self, poster, delivery):
        self.poster = poster
        self.delivery = delivery

    def post(self, items):
        unconfirmed = self.poster.post(items) if self.poster else []
        claims, self.delivery.claims = self.delivery.claims, {}
        store = self.delivery.store
        if store and claims:
            held = {id(i) for i in unconfirmed}
            done = {id(i) for i in items if id(i) not in held}
            store.confirm([k for i, k in claims.items() if i in done])
            # Failed, refused or unconfirmed: the next copy of the notice is handled.
            store.release([k for i, k in claims.items() if i not in done])
        return unconfirmed

    def close(self):
        if self.poster:
            self.poster.close()
        self.delivery.close()


def derive_outgoing(cfg, item, *, relay=False):
    """The notice announcing our copy of what was just delivered (when posting is configured).

    Our copy is a whole file, so part fields are dropped; a relay keeps the original
    publication time and any checksum it verified, a subscriber announces anew."""
    if not cfg.post_broker:
        return
    notice, outcome = item.notice, item.outcome
    local = os.path.abspath(outcome.local_path)
    base_dir = os.path.abspath(cfg.post_base_dir or item.mask.directory)
    rel_path = os.path.relpath(local, base_dir)
    if rel_path.startswith(".."):
        log.error("%s is outside post_base_dir %s: not announced", local, base_dir)
        return
    original = notice.checksum
    if relay and original is not None and checksum.verifiable(original.method):
        verified = original
    else:
        verified = outcome.checksum or original
    base_url = str(cfg.post_base_url)
    if relay and notice.readers:
        where = private.prefix(notice.readers) + "/"
        if rel_path.startswith(where):
            # Still private: its URL is under the pump's password-protected directory.
            base_url, rel_path = base_url.rstrip("/") + "/" + where, rel_path[len(where):]
    item.outgoing = dataclasses.replace(
        notice, pubtime=notice.pubtime if relay else notice_now(), base_url=base_url,
        rel_path=rel_path, checksum=verified, part=None, extra=dict(notice.extra))

