"""The broker: connect, declare, publish with confirms, consume, ack.

One small interface for the layers above (dd.flow, dd.broker.interface): messages go out
through a Publisher and come in through a Consumer of one Subscription, as Deliveries; a
Batch of Envelopes is published with confirms across lost connections.  The URL's scheme
chooses the protocol: AMQP 0-9-1 over py-amqp (amqp://, amqps://: dd.broker.amqp) or MQTT
over paho-mqtt (mqtt://, mqtts://, ws://, wss://: dd.broker.mqtt).  This package knows
messages (topic, body, headers), not notices or files, and never imports dd.transfer.
"""
from __future__ import annotations

from dd.broker.amqp import (CONNECTION_ERRORS, READ_AHEAD, Delivery, Subscription, close_quietly, connect,
                            queue_size, vhost_of)
from dd.broker.batch import Batch, Envelope
from dd.broker.interface import Consumer, Endpoint, Publisher
from dd.core.credentials import Url

#: The URL schemes of MQTT brokers (dd.broker.mqtt).
MQTT_SCHEMES = ("mqtt", "mqtts", "ws", "wss")


def is_mqtt(url: Url) -> bool:
    return url.scheme in MQTT_SCHEMES


def publisher(url: Url, *, heartbeat: float = 60, name: str = "dd-publisher", shuffle: bool = False) -> Publisher:
    """A publisher on `url` (with its password; a cluster's nodes in its alternates, tried in
    order or `shuffle`d), of the protocol its scheme names."""
    if is_mqtt(url):
        from dd.broker import mqtt  # paho is an extra, imported only for an MQTT broker
        return mqtt.Publisher(url, heartbeat=heartbeat, name=name, shuffle=shuffle)
    from dd.broker import amqp
    return amqp.Publisher(url, heartbeat=heartbeat, name=name, shuffle=shuffle)


def consumer(url: Url, subscription: Subscription, *, prefetch: int = 25, heartbeat: float = 60,
             name: str = "dd-consumer", instance: int = 1, instances: int = 1, shuffle: bool = False) -> Consumer:
    """A consumer of `subscription` on `url`; `instance` tells apart the `instances` processes
    sharing it (an MQTT session each)."""
    if is_mqtt(url):
        from dd.broker import mqtt
        return mqtt.Consumer(url, subscription, prefetch=prefetch, heartbeat=heartbeat, name=name,
                             instance=instance, instances=instances, shuffle=shuffle)
    from dd.broker import amqp
    return amqp.Consumer(url, subscription, prefetch=prefetch, heartbeat=heartbeat, name=name, shuffle=shuffle)


__all__ = ["CONNECTION_ERRORS", "MQTT_SCHEMES", "READ_AHEAD", "Batch", "Consumer", "Delivery", "Endpoint", "Envelope",
           "Publisher", "Subscription", "close_quietly", "connect", "consumer", "is_mqtt", "publisher",
           "queue_size", "vhost_of"]
