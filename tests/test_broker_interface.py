"""One suite, every backend: the broker interface (dd.broker.interface) behaves the same on
RabbitMQ over AMQP, on Mosquitto over MQTT 5, and on Mosquitto spoken to in MQTT 3.1.1."""
import uuid

import pytest

from dd import broker
from dd.broker import mqtt
from dd.core.credentials import Url
from dd.core.errors import BrokerRefusal
from dd.core.formats import Message

pytestmark = pytest.mark.broker

BACKENDS = ["amqp", "mqtt5", "mqtt311"]


class Backend:
    def __init__(self, name, url):
        self.name = name
        self.url = Url.parse(url)
        self.protocol = {"mqtt5": mqtt.paho.MQTTv5, "mqtt311": mqtt.paho.MQTTv311}.get(name) if mqtt.paho else None

    def publisher(self, url=None):
        if self.protocol:
            return mqtt.Publisher(url or self.url, heartbeat=30, protocol=self.protocol)
        return broker.publisher(url or self.url, heartbeat=30)

    def consumer(self, subscription, url=None, prefetch=10):
        if self.protocol:
            return mqtt.Consumer(url or self.url, subscription, prefetch=prefetch, heartbeat=30,
                                 protocol=self.protocol)
        return broker.consumer(url or self.url, subscription, prefetch=prefetch, heartbeat=30)

    def with_password(self, password):
        return self.url.with_password(password)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "amqp":
        return Backend("amqp", request.getfixturevalue("broker_url"))
    if mqtt.paho is None:
        pytest.skip("paho-mqtt is not installed")
    return Backend(request.param, request.getfixturevalue("mosquitto").url("dd"))


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return f"xconf_{tag}", f"q_dd.conformance_{tag}"


def message(n, topic="v02.post.a.b"):
    return Message(topic, f"body {n}".encode(), {}, "application/json")


def drain(consumer, want, rounds=40, ack=True):
    """What arrives until `want` deliveries or `rounds` fetches, acknowledged as they come
    (the window of unacknowledged ones is only `prefetch` wide) unless `ack` is False."""
    got = []
    for _ in range(rounds):
        batch = consumer.fetch(0.25)
        if ack:
            consumer.ack(batch)
        got += batch
        if len(got) >= want:
            break
    return got


def publish(backend, exchange, messages):
    publisher = backend.publisher()
    try:
        for n, each in enumerate(messages):
            publisher.publish(exchange, each, n)
        assert publisher.wait(10) == []
    finally:
        publisher.close()


def test_what_is_published_and_confirmed_waits_for_a_declared_subscription_and_arrives_whole(backend, names):
    exchange, queue = names
    consumer = backend.consumer(broker.Subscription(queue, exchange, ("v02.post.#",), expire=60))
    try:
        consumer.declare()
        consumer.close()        # nobody consumes while the messages are published
        publish(backend, exchange, [message(n) for n in range(30)])
        consumer.start()
        got = drain(consumer, 30)
        assert sorted(d.body for d in got) == sorted(f"body {n}".encode() for n in range(30))
        assert {(d.exchange, d.topic) for d in got} == {(exchange, "v02.post.a.b")}
    finally:
        consumer.delete()
        consumer.close()


def test_an_unacknowledged_delivery_comes_again_after_a_reconnection_and_an_acknowledged_one_never(
        backend, names):
    exchange, queue = names
    consumer = backend.consumer(broker.Subscription(queue, exchange, ("v02.post.#",), expire=60))
    try:
        consumer.start()
        publish(backend, exchange, [message(n) for n in range(4)])
        first = drain(consumer, 4, ack=False)
        assert len(first) == 4
        acked = [d for d in first if d.body in (b"body 0", b"body 1")]
        consumer.ack(acked)
        consumer.reopen(give_up_after=10)
        consumer.start()
        again = drain(consumer, 2, rounds=12)
        assert sorted(d.body for d in again) == [b"body 2", b"body 3"]
        # A stale acknowledgement (of the connection before) is never sent.
        consumer.ack(first)
        assert drain(consumer, 1, rounds=4) == []
    finally:
        consumer.delete()
        consumer.close()


def test_wildcards_mean_the_same_on_every_backend(backend, names):
    exchange, queue = names
    consumer = backend.consumer(broker.Subscription(queue, exchange, ("v02.post.a.*", "v02.post.c.#"), expire=60))
    try:
        consumer.start()
        topics = ["v02.post.a.x", "v02.post.a.x.y", "v02.post.c", "v02.post.c.d.e", "v02.post.b.x"]
        publish(backend, exchange, [message(n, topic) for n, topic in enumerate(topics)])
        got = drain(consumer, 3)
        got += drain(consumer, 99, rounds=4)    # and nothing more comes
        assert sorted(d.topic for d in got) == ["v02.post.a.x", "v02.post.c", "v02.post.c.d.e"]
    finally:
        consumer.delete()
        consumer.close()


def test_deleting_a_subscription_drops_what_waits_in_it(backend, names):
    exchange, queue = names
    subscription = broker.Subscription(queue, exchange, ("#",), expire=60)
    consumer = backend.consumer(subscription)
    consumer.declare()
    consumer.close()
    publish(backend, exchange, [message(n) for n in range(3)])
    consumer.delete()
    consumer.close()
    fresh = backend.consumer(subscription)
    try:
        fresh.start()
        assert drain(fresh, 1, rounds=6) == []
    finally:
        fresh.delete()
        fresh.close()


def test_headers_travel_where_the_protocol_has_them_and_are_refused_by_name_where_not(backend, names):
    exchange, queue = names
    consumer = backend.consumer(broker.Subscription(queue, exchange, ("#",), expire=60))
    publisher = backend.publisher()
    try:
        consumer.start()
        with_headers = Message("v02.post.h", b"x", {"sum": "d,abc", "parts": "1,1,1,0,0"}, "text/plain")
        if backend.name == "mqtt311":
            with pytest.raises(BrokerRefusal, match="3.1.1, which carries no headers"):
                publisher.publish(exchange, with_headers)
            return
        publisher.publish(exchange, with_headers)
        assert publisher.wait(10) == []
        got = drain(consumer, 1)
        assert [d.headers for d in got] == [{"sum": "d,abc", "parts": "1,1,1,0,0"}]
    finally:
        publisher.close()
        consumer.delete()
        consumer.close()


def test_a_wrong_password_is_a_refusal_saying_so(backend):
    publisher = backend.publisher(backend.with_password("wrong-" + uuid.uuid4().hex[:6]))
    with pytest.raises(BrokerRefusal) as refused:
        publisher.open()
    assert "wrong-" not in str(refused.value)
    assert "user" in str(refused.value)


def test_mqtt_topics_put_the_exchange_first_with_slashes():
    assert mqtt.topic_name("xpublic", "v03.a.b") == "xpublic/v03/a/b"
    assert mqtt.topic_filter("xpublic", "v03.*.#") == "xpublic/v03/+/#"
    assert mqtt.split_topic("xpublic/v03/a.b/c") == ("xpublic", "v03.a%2Eb.c")
