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

from dd import checksum, flow, hooks, logindex, namespace, nodupe, paths, private, route
from dd.flow import Item
from dd.credentials import Credentials, Url
from dd.errors import NoticeError
from dd.notice import Op
from dd.notice import now as notice_now
from dd.receive import Outcome, Receiver
from dd.retry import RetryStore
from dd.transfer import SCHEMES, Transports, transport_class

log = logging.getLogger("dd.deliver")


def subscription(ctx):
    """The queue of a delivering component: bound to `exchange`, and to the broker user's
    private exchange, where pumps put the private notices it is a reader of; a relay that
    ingests a source's own exchange reads that alone."""
    sub = flow.subscription(ctx)
    user = ctx.credentials.complete(ctx.cfg.broker).user
    if user and route.owner_of(sub.exchange) is None:
        sub = dataclasses.replace(sub, private_exchange=route.private_exchange(user))
    return sub


def consumer(ctx):
    return flow.consumer(ctx, subscription(ctx))


def build(ctx, *, relay=False, htpasswd=None):
    """The flow of a downloading component: consume, place, receive, announce."""
    cfg = ctx.cfg
    decoding = dict(max_notice_size=cfg.max_notice_size, allowed_schemes=set(cfg.allowed_schemes))
    retries = RetryStore(ctx.state.retry_file(ctx.instance), ttl=cfg.retry_ttl, delay=cfg.retry_delay)
    decode = flow.notices(**decoding)
    gatherer = flow.Retrying(flow.BrokerGatherer(consumer(ctx), ingest(decode, cfg.cluster) if relay else decode,
                                                 stop=ctx.stop), retries, **decoding)
    transports, credentials = _transports(ctx, relay)
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
    own = {m.directory for m in cfg.masks} | {cfg.directory, cfg.post_base_dir or cfg.directory} \
        | {ctx.env.config_dir, ctx.env.state_dir, ctx.env.log_dir}
    delivery = Delivery(cfg, receiver, relay=relay, store=store, htpasswd=htpasswd, own=own,
                        credentials=credentials)
    poster, reporter = flow.poster(ctx, _private_exchanges(cfg) if relay else None), flow.reporter(ctx)
    if relay:   # the log router routes only log messages about what a relay recorded
        poster, reporter = logindex.recording(ctx, poster, reporter)
    return flow.Flow(gatherer=gatherer, accept=delivery.accept, work=delivery.work,
                     poster=Recorder(poster, delivery), reporter=reporter,
                     stop=ctx.stop, threads=cfg.threads)


def _private_exchanges(cfg):
    """Where a relay announces: private notices are never broadcast, each of their readers
    (and each downstream pump's feeder, relay_readers) gets them on an exchange of its own."""
    relay_readers = set(cfg.relay_readers or ())

    def exchange_of(item):
        readers = item.outgoing.readers
        if not readers:
            return cfg.post_exchange
        return tuple(route.private_exchange(user) for user in sorted({*readers, *relay_readers}))
    return exchange_of


def _transports(ctx, relay):
    """The transfers of a configuration, and the credentials they fetch with.  A relay that
    ingests a source's own exchange fetches from URLs that source chose: it uses only the
    credentials given for that source (lines of credentials.conf whose user is the source),
    never the pump's own passwords or SSH keys, so a source cannot make the pump fetch what
    only the pump may read."""
    owner = route.owner_of(ctx.cfg.exchange) if relay else None
    if owner is None:
        return Transports(ctx.credentials, timeout=ctx.cfg.timeout), ctx.credentials
    credentials = ctx.credentials.of_user(owner)
    return Transports(credentials, timeout=ctx.cfg.timeout, options={"sftp": {"ambient_keys": False}}), credentials


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

    def __init__(self, cfg, receiver, *, relay, store=None, htpasswd=None, own=(), credentials=None):
        self.cfg = cfg
        self.credentials = credentials or Credentials()     # what the transfers fetch with
        self.receiver = receiver
        self.relay = relay
        self.store = store
        self.htpasswd = htpasswd    # a pump's: private data goes under private/<readers>/
        # What a relay never copies from a file URL: its trees and dd's own directories.
        self.own = [os.path.realpath(d) for d in own]
        self.claims = {}            # id(item) -> nodupe key, for this batch

    def accept(self, item):
        notice = item.notice
        if self.relay and not route.reachable(notice, self.cfg.cluster, self.cfg.gateway_for or ()):
            log.debug("not for this way: %s is for %s", notice.rel_path, ", ".join(notice.to_clusters))
            return False
        item.mask = self.cfg.match(notice.rel_path)
        return item.mask is not None

    def _claim(self, item, where):
        """False for a duplicate.  Claimed in the item's lane, after the notices before it
        about the same path (a delete in between makes the same content new again)."""
        notice = item.notice
        if self.store is None or notice.op is Op.DELETE:
            return True
        content = notice.checksum if notice.op is not Op.LINK else f"link:{notice.link_target}"
        key = nodupe.key(*where, content, notice.part)
        if not self.store.claim(key):
            return False
        self.claims[id(item)] = key
        return True

    def work(self, item: Item):
        notice = item.notice
        try:
            tree, rel_path, old = self._where(notice, item.mask)
        except NoticeError as error:
            item.outcome = Outcome(403, str(error), error.rule)
            return
        # Duplicates are judged where the notice lands: the same product in one source's
        # namespace, never another source's file of the same name and content.
        where = (os.path.abspath(str(tree)), rel_path)
        if not self._claim(item, where):
            item.outcome = Outcome(304, "duplicate (seen within nodupe_ttl)")
            return
        item.outcome = self.receiver.receive(notice, tree, rel_path, old)
        code = item.outcome.code
        if code in (201, 304) and notice.op is Op.DELETE and self.store:
            # The path may now be created again with the same content: not a duplicate.
            self.store.forget(*where)
        if self.announces(item):
            derive_outgoing(self.cfg, item, relay=self.relay)

    def _where(self, notice, mask):
        """(tree, rel_path, rename's old rel_path) of a notice, or NoticeError naming the rule."""
        place = dict(strip=mask.strip, mirror=mask.mirror, flatten=mask.flatten)
        try:
            rel_path = paths.localize(notice.rel_path, **place)
            old = paths.localize(notice.rename_from, **place) if notice.op is Op.RENAME else None
        except paths.PathError as error:
            raise paths.PathError(f"{notice.rel_path!r}: {error}", rule=error.rule) from None
        url = urllib.parse.urlsplit(notice.base_url)
        host = url.hostname or ""
        if self.cfg.allowed_hosts and host not in self.cfg.allowed_hosts:
            raise NoticeError(f"{notice.url}: host {host!r} is not in allowed_hosts", rule="host")
        if not self.relay:
            return paths.Tree(mask.directory), rel_path, old
        self._keep_private(notice)
        source_path = urllib.parse.unquote(urllib.parse.urlsplit(notice.url).path)
        if url.scheme == "file" and any(_within(source_path, own) for own in self.own):
            raise NoticeError(f"{notice.url}: the relay does not copy its own trees, configuration or state",
                              rule="own-files")
        where = namespace.place(notice, rel_path, old)
        if where.private:
            self.htpasswd.allow(notice.readers)
        tree = paths.Tree(mask.directory, namespace=where.namespace,
                          private_group=self.htpasswd.group if where.private else None)
        return tree, where.rel_path, where.old_rel_path

    def _keep_private(self, notice):
        """What the relay fetches with a password from a pump's private area stays private,
        to its readers at most (without a password, the data was anybody's)."""
        found = private.readers_in(urllib.parse.urlsplit(notice.url).path)
        if not found or not self._fetched_with_password(notice.url):
            return
        readers = sorted(set(found) & set(notice.readers)) if notice.readers else found
        if not readers:
            raise NoticeError(f"{notice.url}: private data of {', '.join(found)} announced for "
                              f"{', '.join(notice.readers)}", rule="private-path")
        if readers != sorted(notice.readers):
            log.warning("%s: from a private area, relayed to %s only", notice.url, ", ".join(readers))
        notice.readers = readers

    def _fetched_with_password(self, url):
        try:
            return self.credentials.lookup(Url.parse(url)) is not None
        except ValueError:
            return False

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


def _within(path, directory):
    """Whether `path`, once links are resolved, is `directory` (a real path) or below it."""
    return os.path.commonpath([os.path.realpath(path), directory]) == directory
