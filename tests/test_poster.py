"""The post step against a real broker: every message confirmed, also when confirms
are waited for one batch later, and also across a dropped connection."""
import subprocess
import time
import uuid

import pytest

from dd import broker, flow
from dd.core.credentials import Url
from dd.flow import Item
from dd.core.formats import Message


@pytest.fixture
def queue(broker_url, exchange):
    """A queue bound to `exchange`, and a way to drain what reached it (on a connection
    of its own, made when asked: a test may drop every connection of the vhost)."""
    url = Url.parse(broker_url)
    name = f"q_test.{uuid.uuid4().hex[:8]}"

    def channel_for(action):
        connection = broker.connect(url, heartbeat=0, timeout=10, name="test reader")
        try:
            return action(connection.channel())
        finally:
            connection.close()

    def declare(channel):
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        channel.queue_declare(name, durable=False, auto_delete=False)
        channel.queue_bind(name, exchange, "#")

    def drain(channel):
        bodies = []
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            bodies.append(message.body)
        return bodies

    def remove(channel):
        channel.queue_delete(name)
        channel.exchange_delete(exchange)

    channel_for(declare)
    yield lambda: channel_for(drain)
    channel_for(remove)


def _poster(broker_url, exchange, confirm_later):
    name = f"dd-test-poster-{uuid.uuid4().hex[:8]}"
    publisher = broker.amqp.Publisher(Url.parse(broker_url), heartbeat=0, name=name)
    return flow.Poster(publisher, exchange, lambda item: Message("v02.log.x", item.payload, {}, "application/json"),
                       timeout=20, confirm_later=confirm_later), name


def _batch(first, count):
    return [Item(f"message {n}".encode()) for n in range(first, first + count)]


def _expected(count):
    return sorted(f"message {n}".encode() for n in range(count))


@pytest.mark.parametrize("confirm_later", [False, True])
def test_every_message_is_published_once_and_confirmed(broker_url, exchange, queue, confirm_later):
    poster, _ = _poster(broker_url, exchange, confirm_later)
    assert poster.post(_batch(0, 50)) == []
    assert poster.post(_batch(50, 50)) == []
    poster.close()
    assert sorted(queue()) == _expected(100)


def test_confirm_later_loses_nothing_when_the_connection_drops_between_batches(
        broker_url, exchange, queue, vhost):
    poster, name = _poster(broker_url, exchange, confirm_later=True)
    assert poster.post(_batch(0, 50)) == []
    # The connection drops before this batch's confirms were waited for.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "-p", vhost, "client_properties"],
                                capture_output=True, text=True, timeout=60).stdout
        if name in listed:
            break
        time.sleep(0.2)
    closed = subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "test: dropped"],
                            capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    assert poster.post(_batch(50, 50)) == []
    poster.close()
    # At least once each: what was unconfirmed at the drop is published again.
    assert sorted(set(queue())) == _expected(100)
