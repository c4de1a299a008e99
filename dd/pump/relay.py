"""What makes a delivering flow a pump's relay (dd_sara): the choices dd.delivery.deliver
takes from a pump.

- Identity: a notice read from a user's own exchange xs_<user> is that user's; but one
  another pump's sender pushed here (report_upstream), read from its feeder's exchange,
  keeps the source and cluster it had there, where log messages about it go back.
- Fetching: a relay ingesting a source's exchange fetches from URLs that source chose,
  with that source's own credentials only.
- Placement: each source's files in its own namespace (dd.pump.namespace), private data
  below private/<readers>/, never a copy of the relay's own files.
- Announcing: private notices to each reader's own exchange, never broadcast.
- The log index (dd.store.logindex) records what was announced and ingested.
"""
import logging
import os
import urllib.parse

from dd.core import paths, route
from dd.core.credentials import Url
from dd.core.errors import NoticeError
from dd.delivery import deliver
from dd.delivery.deliver import Relaying
from dd.pump import namespace, private
from dd.pump import indexing
from dd.transfer import Transports

log = logging.getLogger("dd.deliver")


def relaying(ctx, htpasswd) -> Relaying:
    """The relay choices of a dd_sara configuration; `htpasswd` is its data server's."""
    cfg = ctx.cfg
    owner = route.owner_of(cfg.exchange)
    credentials = ctx.credentials if owner is None else ctx.credentials.of_user(owner)
    # A source's URLs are fetched with its own credentials, and never with the SSH agent's
    # or ~/.ssh's keys, which are the pump's: only with a key this configuration names.
    options = deliver.transport_options(cfg)
    if owner is not None:
        options["sftp"]["ambient_keys"] = False
    own = {m.directory for m in cfg.masks} | {cfg.directory, cfg.post_base_dir or cfg.directory} \
        | {ctx.env.config_dir, ctx.env.state_dir, ctx.env.log_dir}
    pushed_by = ctx.credentials.complete(cfg.report_upstream).user if cfg.report_upstream else None
    return Relaying(read=lambda decode: ingest(decode, cfg.cluster, pushed_by=pushed_by),
                    transports=Transports(credentials, timeout=cfg.timeout, options=options),
                    placement=SourceNamespaces(htpasswd, credentials, own),
                    exchange_of=private_exchanges(cfg),
                    record=lambda poster, reporter: indexing.recording(ctx, poster, reporter))


def ingest(decode, cluster, pushed_by=None):
    """A relay's identity rule, around a notice decoder: a notice read from a user's own
    exchange xs_<user> is that user's, whatever its body says, and enters the network
    here.  Only the broker's word counts: the exchange is writable by that user alone
    (and the pump's feeders).  When the notices were pushed here by another pump's
    sender (the exchange is that of `pushed_by`, report_upstream's user: the feeder it
    logs in as), they keep their source and cluster: the pump
    they came from checks every log message about them against its own log index, so a
    feeder can forward a source's notices, not make up log messages for it.  But not one
    claiming this very cluster, whose log messages would stay here, unchecked."""
    def read(delivery):
        item = decode(delivery)
        owner = route.owner_of(delivery.exchange)
        notice = item.notice
        if notice is not None and owner is not None and owner == pushed_by and notice.source \
                and not (cluster and notice.from_cluster == cluster):
            return item
        if notice is not None and owner is not None:
            if notice.source not in ("", owner) or notice.from_cluster not in ("", cluster or ""):
                log.warning("%s: source %r and from_cluster %r replaced by %r and %r, as read from %s",
                            notice.rel_path, notice.source, notice.from_cluster, owner, cluster or "",
                            delivery.exchange)
            notice.source, notice.from_cluster = owner, cluster or ""
        return item
    return read


def private_exchanges(cfg):
    """Where a relay announces: private notices are never broadcast, each of their readers
    (and each downstream pump's feeder, relay_readers) gets them on an exchange of its own."""
    relay_readers = set(cfg.relay_readers or ())

    def exchange_of(item):
        readers = item.outgoing.readers
        if not readers:
            return cfg.post_exchange
        return tuple(route.private_exchange(user) for user in sorted({*readers, *relay_readers}))
    return exchange_of


class SourceNamespaces:
    """A pump's placement (dd.delivery.deliver.Placement): each notice in its source's
    namespace, private data below private/<readers>/, announced from there."""

    def __init__(self, htpasswd, credentials, own=()):
        self.htpasswd = htpasswd            # the data server's password files
        self.credentials = credentials      # what the relay fetches with
        # What a relay never copies from a file URL: its trees and dd's own directories.
        self.own = [os.path.realpath(d) for d in own]

    def place(self, notice, mask, rel_path, old_rel_path):
        self._keep_private(notice)
        url = urllib.parse.urlsplit(notice.url)
        if url.scheme == "file" and any(_within(urllib.parse.unquote(url.path), own) for own in self.own):
            raise NoticeError(f"{notice.url}: the relay does not copy its own trees, configuration or state",
                              rule="own-files")
        where = namespace.place(notice, rel_path, old_rel_path)
        if where.private:
            self.htpasswd.allow(notice.readers)
        tree = paths.Tree(mask.directory, namespace=where.namespace,
                          private_group=self.htpasswd.group if where.private else None)
        return tree, where.rel_path, where.old_rel_path

    @staticmethod
    def announced(notice, base_url, rel_path):
        if notice.readers:
            where = private.prefix(notice.readers) + "/"
            if rel_path.startswith(where):
                # Still private: its URL is under the pump's password-protected directory.
                return base_url.rstrip("/") + "/" + where, rel_path[len(where):]
        return base_url, rel_path

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


def _within(path, directory):
    """Whether `path`, once links are resolved, is `directory` (a real path) or below it."""
    return os.path.commonpath([os.path.realpath(path), directory]) == directory
