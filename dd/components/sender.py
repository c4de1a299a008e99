"""dd_sender: a queue on a pump in, each file pushed to a destination (SFTP, FTP(S) or a
local directory) and announced again from there when post_broker is set."""
from dd.delivery import deliver, send

NAME = "sender"
DAEMON = True
consumer = deliver.consumer
services = None


def subscription(ctx):
    # Checked before `start` starts anything: a sender with nowhere to send is no sender.
    _destination(ctx.cfg)
    return deliver.subscription(ctx)


def _destination(cfg):
    cfg.require("destination")
    destination = send.Destination(cfg.destination)
    for directory in {cfg.directory, *(mask.directory for mask in cfg.masks)}:
        send.below_destination(directory)
    if cfg.post_broker:
        cfg.require("post_base_url")
    return destination


def build(ctx):
    cfg = ctx.cfg
    destination = _destination(cfg)

    def sending(transports, tick):
        return send.Sender(transports, rate_max=cfg.rate_max, pace=deliver.pace(ctx), verify_sent=cfg.verify_sent,
                           tick=tick, progress=ctx.progress), destination
    return deliver.build(ctx, sending=sending)
