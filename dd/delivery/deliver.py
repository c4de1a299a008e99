"""Delivery: the work of the components that download (dd_subscribe, dd_sara) or send (dd_sender).

A queue on a broker in; each accepted notice judged by on_notice (dd.delivery.plugins),
placed in its tree (dd.core.paths), received (dd.delivery.receive), handed to on_file
(dd.delivery.hooks), and announced again when posting is configured.  Duplicates
(dd.store.nodupe) are refused before any download, and their keys are recorded only
once the delivery and its announcement are confirmed.

The two users differ in one choice, `relaying`: dd_subscribe announces its copy
as a new notice of its own, while dd_sara relays the original notice (its
checksum, source, publication time and clusters) from its own data server, with
the choices a pump makes (dd.pump.relay): where each source's files go, what it
fetches with, where private notices are announced, what the log index records.
dd_sender makes another, `sending` (dd.delivery.send): its files go to a remote
destination instead of a local tree, and are announced from there.
"""
import dataclasses
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Callable, Optional, Protocol

from dd import flow
from dd.core import checksum, paths, route
from dd.core.errors import ConfigError, NoticeError, StoreUnavailable
from dd.core.formats import wis2
from dd.core.notice import Notice, Op, validate
from dd.core.notice import now as notice_now
from dd.core.options import python_spec
from dd.core.outcome import Code, Outcome
from dd.delivery import hooks, plugins
from dd.delivery.receive import Receiver
from dd.flow import Item
from dd.store import nodupe
from dd.store.ratebudget import SharedPace
from dd.store.retry import RetryStore
from dd.transfer import SCHEMES, Transports, copy, transport_class

log = logging.getLogger("dd.deliver")


def subscription(ctx):
    """The queue of a delivering component: bound to `exchange`, and to the broker user's
    private exchange, where pumps put the private notices it is a reader of; a relay that
    ingests a source's own exchange reads that alone."""
    # A plugin that does not load is a configuration error before `start` starts anything.
    loaded_plugins(ctx)
    sub = flow.subscription(ctx)
    user = ctx.credentials.complete(ctx.cfg.broker).user
    if user and route.owner_of(sub.exchange) is None:
        sub = dataclasses.replace(sub, private_exchange=route.private_exchange(user))
    return sub


def consumer(ctx):
    return flow.consumer(ctx, subscription(ctx))


class Placement(Protocol):
    """Where a notice lands, and where the copy is announced from."""

    def place(self, notice: Notice, mask, rel_path: str,
              old_rel_path: Optional[str]) -> tuple[paths.Tree, str, Optional[str]]:
        """(tree, rel_path, old_rel_path) of `notice` in its tree, `rel_path` being its path
        once localized (strip, mirror, flatten); NoticeError naming the rule that refuses it."""

    def announced(self, notice: Notice, base_url: str, rel_path: str) -> tuple[str, str]:
        """(base_url, rel_path) the copy at `rel_path` below post_base_dir is announced with."""


class PlainTree:
    """A subscriber's placement: the accept line's directory, announced as it lies."""

    @staticmethod
    def place(notice, mask, rel_path, old_rel_path):
        return paths.Tree(mask.directory), rel_path, old_rel_path

    @staticmethod
    def announced(notice, base_url, rel_path):
        return base_url, rel_path


PLAIN_TREE = PlainTree()


@dataclasses.dataclass
class Relaying:
    """What makes a delivering flow a pump's relay: dd.pump.relay makes one."""

    read: Callable          # decoder -> decoder: the identity rule at ingest
    transports: Transports  # what the relay fetches with
    placement: Placement    # each source's namespace, private data
    exchange_of: Callable   # item -> exchange name(s): private notices to their readers
    record: Callable        # (poster, reporter) -> (poster, reporter): the log index


def loaded_plugins(ctx) -> tuple[Optional[plugins.NoticeCheck], Optional[plugins.FileCheck]]:
    """The configuration's on_notice and python: on_file plugins, loaded (a ConfigError if not)."""
    cfg = ctx.cfg
    search = Path(ctx.env.config_dir) / "plugins"
    on_notice = plugins.NoticeCheck(plugins.load("on_notice", cfg.on_notice, search)) if cfg.on_notice else None
    on_file = plugins.FileCheck(plugins.load("on_file", cfg.on_file, search)) \
        if cfg.on_file and python_spec(cfg.on_file) else None
    return on_notice, on_file


def build(ctx, relaying: Optional[Relaying] = None, sending: Optional[Callable] = None):
    """The flow of a delivering component: consume, place, receive, announce.  `sending`
    ((transports, tick) -> (receiver, placement)) puts files somewhere else than a local tree."""
    cfg = ctx.cfg
    # Plugins first: one that does not load is a configuration error before anything starts.
    on_notice, on_file = loaded_plugins(ctx)
    decoding = dict(max_notice_size=cfg.max_notice_size, allowed_schemes=set(cfg.allowed_schemes))
    retries = RetryStore(ctx.state.retry_file(ctx.instance), ttl=cfg.retry_ttl, delay=cfg.retry_delay)
    decode = flow.notices(**decoding)
    gatherer = flow.Retrying(flow.BrokerGatherer(consumer(ctx), relaying.read(decode) if relaying else decode,
                                                 stop=ctx.stop, delivery_limit=cfg.delivery_limit),
                            retries, **decoding)
    transports = relaying.transports if relaying else Transports(ctx.credentials, timeout=cfg.timeout,
                                                                 options=transport_options(cfg))
    # Import the transports now: the first notice of a burst must not wait for that.  Not
    # sftp's: paramiko takes 0.15 s to import, about what its first SSH handshake takes anyway.
    for scheme in set(cfg.allowed_schemes) & set(SCHEMES) - {"sftp"}:
        transport_class(scheme)
    if sending:
        receiver, placement = sending(transports, gatherer.tick)
    else:
        if relaying is None:
            check_directories(ctx.cfg, ctx.cfg.component)
        receiver = Receiver(transports, download_checksum=cfg.checksum, rate_max=cfg.rate_max, pace=pace(ctx),
                            fsync=cfg.fsync, tick=gatherer.tick, stale_after=cfg.retry_ttl,
                            progress=ctx.progress, parallel=cfg.parallel)
        placement = relaying.placement if relaying else PLAIN_TREE
    if cfg.on_file:
        hook = on_file or hooks.Hook(cfg.on_file, timeout=cfg.on_file_timeout, tick=gatherer.tick, stop=ctx.stop)
        due = hooks.DueStore(ctx.state.hooks_file(), cfg.retry_ttl)
        receiver = hooks.Hooked(receiver, hook, due, retry=cfg.on_file_failure == "retry")
    store = nodupe.opened(cfg.nodupe_store and ctx.credentials.complete(cfg.nodupe_store),
                          ctx.state.shared_file("nodupe.sqlite"), cfg.nodupe_ttl,
                          f"{cfg.component}/{cfg.name}") if cfg.nodupe_ttl else None
    delivery = Delivery(cfg, receiver, relay=relaying is not None, store=store,
                        placement=placement, on_notice=on_notice)
    poster, reporter = flow.poster(ctx, relaying.exchange_of if relaying else None), flow.reporter(ctx)
    if relaying:
        poster, reporter = relaying.record(poster, reporter)
    return flow.Flow(gatherer=gatherer, accept=delivery.accept, prepare=delivery.claim_ahead, work=delivery.work,
                     poster=Recorder(poster, delivery), reporter=reporter,
                     stop=ctx.stop, threads=cfg.threads, pipelined=True)


def pace(ctx) -> Optional[copy.Pace]:
    """rate_max's budget: shared through rate_store, or (None) this process's own."""
    cfg = ctx.cfg
    if cfg.rate_store is None or not cfg.rate_max:
        return None
    return SharedPace(ctx.credentials.complete(cfg.rate_store), f"{cfg.component}/{cfg.name}",
                      copy.PROCESS_PACE.wait_for)


def check_directories(cfg, component):
    """A ConfigError for a directory of the accept lines that this user cannot write into:
    found at start, not after a day of quiet retries.  One that does not exist yet is made
    when a file lands in it, so the nearest one that exists is checked."""
    for directory in sorted({str(mask.directory) for mask in cfg.accepting()}):
        existing = os.path.abspath(directory)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ConfigError(f"directory {directory}: {existing} is not a directory",
                              fix="set directory to a directory, before the accept lines")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ConfigError(f"directory {directory}: permission denied: dd_{component} cannot write into "
                              f"{existing}", fix="give its user write permission there, or set another directory")


def transport_options(cfg) -> dict:
    """The keyword options of each scheme's transport that a configuration sets."""
    sftp = {"known_hosts": cfg.known_hosts, "key_filename": cfg.sftp_key}
    options = {"sftp": {k: str(v) for k, v in sftp.items() if v is not None}}
    if cfg.https_ca_file is not None:
        options["https"] = {"verify": str(cfg.https_ca_file)}
    if cfg.ftps_ca_file is not None:
        options["ftps"] = {"ca_file": str(cfg.ftps_ca_file)}
    return options


class Delivery:
    """accept and work for the flow, with the duplicate claims made on the way."""

    def __init__(self, cfg, receiver, *, relay, store=None, placement: Optional[Placement] = None,
                 on_notice: Optional[plugins.NoticeCheck] = None):
        self.cfg = cfg
        self.on_notice = on_notice
        self.receiver = receiver
        self.relay = relay
        self.store = store
        self.placement = placement or PLAIN_TREE
        self.claims = {}            # id(item) -> its nodupe keys, of the batches not yet posted
        self._ahead = {}            # id(item) -> (its place, its claim's verdict), of claim_ahead

    def accept(self, item):
        notice = item.notice
        if self.relay and not route.reachable(notice, self.cfg.cluster, self.cfg.gateway_for or ()):
            log.debug("not for this way: %s is for %s", notice.rel_path, ", ".join(notice.to_clusters))
            return False
        item.mask = self.cfg.match(notice.rel_path)
        if item.mask is None:
            item.refused_by = self.cfg.refusal(notice.rel_path)
        return item.mask is not None

    def claim_ahead(self, items):
        """The duplicate claims of a batch, made at once (one round trip to a shared store)
        before its items are worked on, each kept for its item's work.  Left to the item's
        own work: a notice that on_notice may change, or one about a path that a delete
        earlier in the batch makes new again (claimed after that delete forgets it)."""
        if self.store is None or self.on_notice is not None:
            return
        planned, deleted = [], set()
        for item in items:
            try:
                place = self._where(item.notice, item.mask)
            except NoticeError:
                continue        # refused by its work
            where = (self._scope(place[0], item.mask), place[1])
            if item.notice.op is Op.DELETE or where in deleted:
                deleted.add(where)
                continue
            planned.append((item, place, self._keys(item.notice, where)))
        verdicts = self._claimed([(item, keys) for item, _, keys in planned])
        for (item, place, _), verdict in zip(planned, verdicts):
            self._ahead[id(item)] = (place, verdict)

    def _claimed(self, claims):
        """Each (item, its keys)'s verdict, from one call to the store: claimed (True), a
        duplicate (False), or why it cannot be said (StoreUnavailable: a shared store did
        not answer, or another node has a key in hand)."""
        if not claims:
            return []
        try:
            verdicts = iter(self.store.claim_each([key for _, keys in claims for key in keys]))
        except StoreUnavailable as error:
            return [error] * len(claims)
        return [self._verdict(item, keys, [next(verdicts) for _ in keys]) for item, keys in claims]

    def _claim(self, item, where):
        """The item's verdict, claimed in its lane, after the notices before it about the
        same path (a delete in between makes the same content new again)."""
        return self._claimed([(item, self._keys(item.notice, where))])[0]

    @staticmethod
    def _keys(notice, where):
        keys = nodupe.message_keys(where[0], notice)
        if notice.op is not Op.DELETE:
            content = notice.checksum if notice.op is not Op.LINK else f"link:{notice.link_target}"
            keys.append(nodupe.key(*where, content, notice.part))
        return keys

    def _verdict(self, item, keys, verdicts):
        """The item's from its keys' (the first that is not a win decides); keys won for a
        duplicate are released at once, so that a later copy is handled."""
        won = [key for key, verdict in zip(keys, verdicts) if verdict is True]
        verdict = next((v for v in verdicts if v is not True), True)
        if verdict is True:
            if won:
                self.claims[id(item)] = won
        else:
            self.store.release(won)
        return verdict

    def _scope(self, tree, mask):
        """Where duplicates are judged: the tree's directory, or, in a store that hosts
        share, what names it on every host (which accept line, which namespace below it)."""
        if not isinstance(tree, paths.Tree):
            return str(tree)
        if self.store is None or not self.store.shared:
            return os.path.abspath(str(tree))
        line = next((f"#{n}" for n, m in enumerate(self.cfg.masks) if m is mask), "#unmatched")
        return os.path.join(line, *tree.namespace)

    def work(self, item: Item):
        ahead = self._ahead.pop(id(item), None)
        if ahead:
            (tree, rel_path, old), claimed = ahead
            notice = item.notice
        else:
            # The item keeps the notice as received: its log message and retry entry are about that one.
            notice, item.outcome = self._judged(item.notice) if self.on_notice else (item.notice, None)
            if item.outcome:
                return
            try:
                tree, rel_path, old = self._where(notice, item.mask)
            except NoticeError as error:
                changed = "" if notice is item.notice else f" (as on_notice {self.on_notice.plugin.name} changed it)"
                item.outcome = Outcome(Code.DENIED, f"{error}{changed}", error.rule)
                return
        # Duplicates are judged where the notice lands: the same product in one source's
        # namespace, never another source's file of the same name and content.
        local = isinstance(tree, paths.Tree)
        where = (self._scope(tree, item.mask), rel_path)
        verdict = claimed if ahead else (self.store is None or self._claim(item, where))
        if verdict is False:
            item.outcome = Outcome(Code.UNCHANGED, "duplicate (seen within nodupe_ttl)")
            return
        if isinstance(verdict, StoreUnavailable):
            item.outcome = Outcome(Code.FAILED, str(verdict), verdict.rule)
            return
        # A changed rel_path says where the file lands; the data stays where the source put it,
        # on the (maybe changed) base_url's server.
        fetched = notice if notice is item.notice else dataclasses.replace(notice, rel_path=item.notice.rel_path)
        try:
            item.outcome = self.receiver.receive(fetched, tree, rel_path, old)
        finally:
            # Failed or refused: the next copy of the notice is handled.
            if (item.outcome is None or not item.outcome.ok) and id(item) in self.claims:
                self.store.release(self.claims.pop(id(item)))
        code = item.outcome.code
        if code in (Code.DELIVERED, Code.UNCHANGED) and notice.op is Op.DELETE and self.store is not None:
            # The path may now be created again with the same content: not a duplicate.
            self.store.forget(*where)
        if self.announces(item):
            derive_outgoing(self.cfg, item, relay=self.relay, placement=self.placement, notice=notice,
                            rel_path=None if local else rel_path)

    def _judged(self, notice):
        """(the notice to act on, None), or (None, the outcome of a notice on_notice refused or
        failed on).  A changed notice passes the checks of one from the wire, and then _where's."""
        try:
            verdict = self.on_notice(notice)
        except plugins.PluginFailed as error:
            return None, Outcome(Code.FAILED, f"{error} for {notice.rel_path}", "on_notice")
        if verdict is None:
            return notice, None
        if isinstance(verdict, str):
            return None, Outcome(Code.DENIED, verdict, "on_notice")
        try:
            if not isinstance(verdict.op, Op):
                raise NoticeError(f"op must be an Op, not {verdict.op!r}", rule="type")
            return validate(verdict, allowed_schemes=set(self.cfg.allowed_schemes)), None
        except NoticeError as error:
            return None, Outcome(Code.REFUSED_NOTICE, f"on_notice {self.on_notice.plugin.name} changed "
                                                      f"{notice.rel_path} into a notice refused: {error}",
                                 error.rule)

    def _where(self, notice, mask):
        """(tree, rel_path, rename's old rel_path) of a notice, or NoticeError naming the rule."""
        place = dict(strip=mask.strip, mirror=mask.mirror, flatten=mask.flatten)
        try:
            rel_path = paths.localize(notice.rel_path, **place)
            old = paths.localize(notice.rename_from, **place) if notice.op is Op.RENAME else None
        except paths.PathError as error:
            raise paths.PathError(f"{notice.rel_path!r}: {error}", rule=error.rule) from None
        host = urllib.parse.urlsplit(notice.base_url).hostname or ""
        if self.cfg.allowed_hosts and host not in self.cfg.allowed_hosts:
            raise NoticeError(f"{notice.url}: host {host!r} is not in allowed_hosts", rule="host")
        return self.placement.place(notice, mask, rel_path, old)

    def announces(self, item):
        """DELIVERED: done now.  A relay also announces UNCHANGED, found in place and verified,
        so that a crash between the rename and the broker's confirm announces it late, not never;
        but a part found in place says nothing of the whole file, a delete found done is no news."""
        code, notice = item.outcome.code, item.notice
        return code == Code.DELIVERED or (self.relay and code == Code.UNCHANGED and notice.part is None
                                          and notice.op is not Op.DELETE)

    def close(self):
        self.receiver.close()
        if self.store is not None:
            self.store.close()


class Recorder:
    """The post step, then the duplicate store: a key is recorded once its notice is
    confirmed downstream (or needed no announcement), released otherwise."""

    def __init__(self, poster, delivery):
        self.poster = poster
        self.delivery = delivery

    def post(self, items):
        unconfirmed = self.poster.post(items) if self.poster else []
        # Only this batch's: the next one may be claiming meanwhile (a pipelined flow).
        claims = {id(i): key for i in items if (key := self.delivery.claims.pop(id(i), None))}
        store = self.delivery.store
        if store is not None and claims:
            held = {id(i) for i in unconfirmed}
            done = {id(i) for i in items if id(i) not in held}
            store.confirm([k for i, keys in claims.items() if i in done for k in keys])
            # Unconfirmed: the next copy of the notice is handled (a failed one's went at once).
            store.release([k for i, keys in claims.items() if i not in done for k in keys])
        return unconfirmed

    def close(self):
        if self.poster:
            self.poster.close()
        self.delivery.close()


def derive_outgoing(cfg, item, *, relay=False, placement: Optional[Placement] = None,
                    notice: Optional[Notice] = None, rel_path: Optional[str] = None):
    """The notice announcing our copy of what was just delivered (when posting is configured):
    of `notice`, the item's unless on_notice changed it; at `rel_path` below post_base_url
    when given (a sender's, below its destination), else at the local copy's path below
    post_base_dir.

    Our copy is a whole file, so part fields are dropped; a relay keeps the original
    publication time and any checksum it verified, a subscriber announces anew."""
    if not cfg.post_broker:
        return
    notice, outcome = notice or item.notice, item.outcome
    if rel_path is None:
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
    base_url, rel_path = (placement or PLAIN_TREE).announced(notice, str(cfg.post_base_url), rel_path)
    item.outgoing = dataclasses.replace(
        notice, pubtime=notice.pubtime if relay else notice_now(), base_url=base_url,
        rel_path=rel_path, checksum=verified, part=None,
        # Our copy is announced by a message of its own (a new WIS2 id).
        extra={k: v for k, v in notice.extra.items() if k not in wis2.MESSAGE_FIELDS})
