"""dd_subscribe: the end user's tool — a queue on a pump in, a verified mirror out."""
from dd.delivery import deliver

NAME = "subscribe"
DAEMON = True
subscription = deliver.subscription
consumer = deliver.consumer
services = None


def build(ctx):
    # What it delivers it announces (with post_broker) as a new notice of its own.
    return deliver.build(ctx)
