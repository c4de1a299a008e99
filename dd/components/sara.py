"""dd_sara: a pump's ingest and relay — notices in, data into the pump's tree, the same
notices (checksum, parts, source kept) out again from the pump's own data server."""
import threading

from dd.delivery import deliver
from dd.pump import dataserver, relay, retention

NAME = "sara"
DAEMON = True
consumer = deliver.consumer


def subscription(ctx):
    # Checked before `start` starts anything: a relay that cannot announce is no relay.
    ctx.cfg.require("broker", "post_broker", "post_base_url")
    _data_server(ctx).check()
    return deliver.subscription(ctx)


def _data_server(ctx):
    return dataserver.DataServer(ctx.cfg, ctx.state, ctx.env)


def build(ctx):
    cfg = ctx.cfg
    subscription(ctx)
    the_flow = deliver.build(ctx, relay.relaying(ctx, _data_server(ctx).htpasswd(ctx.credentials)))
    # One sweeper per configuration, not per instance.
    if cfg.retention and ctx.instance == 1:
        announce = retention.announcer(ctx) if cfg.retention_announce else None
        sweeper = retention.Sweeper(retention.trees(cfg), cfg.retention, announce=announce)
        threading.Thread(target=sweeper.run, args=(ctx.stop,), name="retention", daemon=True).start()
    return the_flow


def services(ctx):
    """What runs beside the instances, started and stopped with them: the data server."""
    return [_data_server(ctx)]
