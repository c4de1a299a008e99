"""dd.broker against the real broker.  The Publisher: every message of a batch is confirmed or handed
back as refused, whatever the order the broker confirms them in, and a batch that changes
exchanges (a declaration in the middle of a corked batch) arrives whole.  The Consumer, reading
ahead: every message whole and in order."""
import threading
import time

import amqp
import pytest

from dd import broker
from dd.core import formats
from dd.core.credentials import Url

pytestmark = pytest.mark.broker


def message(n):
    return formats.Message(f"v02.post.n{n}", f'{{"n": {n}}}'.encode(), {}, "application/json")


@pytest.fixture
def channel(broker_url):
    url = Url.parse(broker_url)
    connection = amqp.Connection(f"{url.host}:{url.port}", userid=url.user, password=url.password,
                                 virtual_host=url.path.lstrip("/"))
    connection.connect()
    yield connection.channel()
    connection.close()


def queue_on(channel, exchange, **arguments):
    channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
    queue, _, _ = channel.queue_declare("", exclusive=True, arguments=arguments)
    channel.queue_bind(queue, exchange, "#")
    return queue


def drain(channel, queue):
    bodies = []
    while (got := channel.basic_get(queue, no_ack=True)) is not None:
        bodies.append(got.body)
    return bodies


def test_a_batch_is_confirmed_and_what_a_full_queue_refuses_comes_back(broker_url, exchange, channel):
    # The queue takes 300 messages and refuses the rest: the broker nacks those, acks the others,
    # one at a time or several in one frame.
    queue = queue_on(channel, exchange, **{"x-max-length": 300, "x-overflow": "reject-publish"})
    publisher = broker.amqp.Publisher(Url.parse(broker_url))
    try:
        for n in range(1000):
            publisher.publish(exchange, message(n), n)
        refused = publisher.wait(30)
        assert sorted(refused) == list(range(300, 1000))
        assert publisher.unconfirmed == []
        # Confirmed and refused ones are forgotten: the next batch starts clean.
        publisher.publish(exchange, message(1000), 1000)
        assert publisher.wait(10) == [1000]
        assert len(drain(channel, queue)) == 300
    finally:
        publisher.close()


def test_a_batch_over_several_exchanges_arrives_whole_and_in_order(broker_url, exchange, channel):
    queues = [queue_on(channel, f"{exchange}_{i}") for i in range(3)]
    publisher = broker.amqp.Publisher(Url.parse(broker_url))
    try:
        for n in range(900):
            # A first message to each exchange declares it in the middle of the batch.
            publisher.publish(f"{exchange}_{n // 300}" if n < 600 else f"{exchange}_{n % 3}", message(n), n)
        assert publisher.wait(30) == []
    finally:
        publisher.close()
    received = [[int(b.decode()[5:-1]) for b in drain(channel, q)] for q in queues]
    assert sorted(sum(received, [])) == list(range(900))
    assert all(r == sorted(r) for r in received)


def test_a_consumer_reading_ahead_gets_every_message_whole_and_in_order(broker_url, exchange):
    # dd's connections read what the socket holds, up to READ_AHEAD bytes, and cut frames
    # from it: frames that span reads, bodies bigger than a read, many messages in one.
    url = Url.parse(broker_url)
    publisher = broker.amqp.Publisher(url)
    consumer = broker.amqp.Consumer(url, broker.Subscription(f"q_guest.readahead_{exchange}", exchange, ("#",)),
                               prefetch=50)
    try:
        publisher.open()
        publisher.declare_exchange(exchange)
        consumer.start()
        sizes = [1, 700, 3 * broker.READ_AHEAD + 5, 0, 64, broker.READ_AHEAD] * 40
        sent = [bytes([n % 251]) * size for n, size in enumerate(sizes)]
        for n, body in enumerate(sent):
            publisher.publish(exchange, formats.Message(f"v02.post.n{n}", body, {"n": n}, "text/plain"))
        assert publisher.wait(10) == []
        received = []
        while len(received) < len(sent):
            batch = consumer.fetch(5.0)
            assert batch, f"only {len(received)} of {len(sent)} messages arrived"
            received += batch
            consumer.ack(batch)
        assert [d.body for d in received] == sent
        assert [d.headers["n"] for d in received] == list(range(len(sent)))
        assert consumer.fetch(0.2) == []
    finally:
        consumer.delete()
        consumer.close()
        publisher.close()


def test_what_the_broker_nacks_is_published_again_on_a_new_connection(broker_url, exchange, channel):
    # A full queue refuses (nacks) until it is drained: a nack is not a loss, the batch publishes
    # again until the broker takes it, or hands the message back once its time is up.
    queue = queue_on(channel, exchange, **{"x-max-length": 1, "x-overflow": "reject-publish"})
    channel.basic_publish(amqp.Message(b"filler", delivery_mode=2), exchange=exchange, routing_key="x")
    publisher = broker.publisher(Url.parse(broker_url))
    try:
        started = time.monotonic()
        assert broker.Batch(publisher, [broker.Envelope(exchange, message(1), 1)]).confirm(1.0) == [1]
        assert time.monotonic() - started < 3.0
        generation = publisher.generation
        drained = threading.Timer(0.5, drain, (channel, queue))
        drained.start()
        assert broker.Batch(publisher, [broker.Envelope(exchange, message(2), 2)]).confirm(10.0) == []
        assert publisher.generation > generation        # each nack: a new connection
    finally:
        publisher.close()
    drained.join()
    assert drain(channel, queue) == [message(2).body]
