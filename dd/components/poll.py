"""dd_poll: a remote tree (http autoindex, sftp, ftp, file) listed on a schedule, and what is
new, changed or gone in it announced at its remote URLs (dd.source.polling).

What was announced is kept in a record shared by every instance and configuration of
dd_poll (dd.store.polled), so restarts and other pollers of the same tree announce only
what changed since; each change is claimed in the shared duplicate store first, so two
pollers never both announce it.  With nodupe_store both are in that Redis, shared by the
user's pollers on every node of a pump.
"""
from dd import flow
from dd.delivery.deliver import transport_options
from dd.source.polling import CLAIM_TTL, PollGatherer
from dd.store import nodupe, polled
from dd.transfer import Transports

NAME = "poll"
DAEMON = True
# No queue to consume, nothing run beside the instances (dd.components.Component).
subscription = consumer = services = None


def build(ctx):
    cfg = ctx.cfg
    cfg.require("post_broker", "poll_url")
    transports = Transports(ctx.credentials, timeout=cfg.timeout, options=transport_options(cfg))
    # One tree announced to one exchange: pollers of both share what was announced.
    source = f"{cfg.post_exchange} {str(cfg.poll_url).rstrip('/')}/"
    redis = cfg.nodupe_store and ctx.credentials.complete(cfg.nodupe_store)
    # What the SQLite files of one user's state directory are to one host.
    namespace = f"poll/{cfg.post_broker.user or ''}"
    record = polled.opened(redis, ctx.state.shared_file("polled.sqlite"), source, namespace)
    claims = nodupe.opened(redis, ctx.state.shared_file("nodupe.sqlite"), CLAIM_TTL, namespace)
    gatherer = PollGatherer(cfg, transports, record, claims, ctx.stop)
    return flow.Flow(gatherer=gatherer, accept=lambda item: True, work=_announce, poster=flow.poster(ctx),
                     stop=ctx.stop)


def _announce(item):
    item.outgoing = item.notice
