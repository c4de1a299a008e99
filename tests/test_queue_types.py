"""Queue types (queue_type classic, quorum, stream) on the real broker, and delivery_limit:
a notice whose work crashes the process ends in the retry store instead of looping."""
import datetime
import textwrap
import time

import pytest

from dd import broker
from dd.core import formats
from dd.core.credentials import Url
from dd.core.options import BY_NAME
from dd.store.retry import RetryStore
from tests.support.brokers import _rabbitmqctl
from tests.support.pump import wait_for

pytestmark = pytest.mark.broker


def queue_type(vhost, queue):
    out = _rabbitmqctl("list_queues", "-p", vhost, "name", "type").stdout
    return dict(line.split()[:2] for line in out.splitlines() if line.strip()).get(queue)


def publish(url, exchange, count, first=0):
    publisher = broker.amqp.Publisher(url)
    try:
        for n in range(first, first + count):
            publisher.publish(exchange, formats.Message(f"v02.post.n{n}", b"%d" % n, {}, "text/plain"))
        assert publisher.wait(10) == []
    finally:
        publisher.close()


def broker_now():
    """The broker's clock, which stamps a stream's chunks.  Not ours: after a step of the
    system clock the Erlang VM's follows only slowly (seconds apart were seen here)."""
    out = _rabbitmqctl("eval", "erlang:system_time(millisecond).").stdout
    return datetime.datetime.fromtimestamp(int(out.strip()) / 1000, datetime.timezone.utc)


def drain(consumer, quiet=1.0, expecting=False):
    """Bodies received until nothing arrives for `quiet` seconds; acknowledged.  `expecting`
    some, the first may take longer: a stream read from a time is sought first, which on a
    loaded broker took more than a second."""
    received = []
    timeout = 15.0 if expecting else quiet
    while batch := consumer.fetch(timeout):
        received += [d.body for d in batch]
        consumer.ack(batch)
        timeout = quiet
    return received


def fetch_all(consumer, count, timeout=10.0):
    """Deliveries until `count` came: a broker may hand them over in more than one batch
    (redeliveries from a quorum queue came one at a time on a loaded machine)."""
    deliveries, deadline = [], time.monotonic() + timeout
    while len(deliveries) < count and time.monotonic() < deadline:
        deliveries += consumer.fetch(deadline - time.monotonic())
    return deliveries


def test_a_quorum_queue_is_declared_as_one_and_counts_deliveries(broker_url, vhost, exchange):
    url = Url.parse(broker_url)
    sub = broker.Subscription(f"q_guest.quorum_{exchange}", exchange, ("#",), queue_type="quorum")
    consumer = broker.amqp.Consumer(url, sub, prefetch=10)
    try:
        consumer.start()        # per-consumer prefetch: a global one would close the channel here
        assert queue_type(vhost, sub.queue) == "quorum"
        publish(url, exchange, 3)
        first = fetch_all(consumer, 3)
        assert [d.earlier_deliveries for d in first] == [0, 0, 0]
        consumer.reopen()       # not acknowledged: delivered again, and the broker counts it
        consumer.start()
        again = fetch_all(consumer, 3)
        assert sorted(d.body for d in again) == [b"0", b"1", b"2"]
        assert [d.earlier_deliveries for d in again] == [1, 1, 1]
        consumer.ack(again)
        assert drain(consumer) == []
    finally:
        consumer.delete()
        consumer.close()


def test_a_stream_is_read_from_its_offset(broker_url, vhost, exchange):
    url = Url.parse(broker_url)
    name = f"q_guest.stream_{exchange}"
    first = broker.amqp.Consumer(url, broker.Subscription(name, exchange, ("#",), queue_type="stream",
                                                     stream_offset="first"), prefetch=50)
    try:
        first.declare()
        assert queue_type(vhost, name) == "stream"
        publish(url, exchange, 5)
        time.sleep(1.1)     # a stream's timestamps are to the second
        since = broker_now()
        time.sleep(1.1)
        publish(url, exchange, 5, first=5)
        first.start()
        assert drain(first, expecting=True) == [b"%d" % n for n in range(10)]      # replayed from the start
        # A new reader from 'next' sees only what comes after it started...
        later = broker.amqp.Consumer(url, broker.Subscription(name, exchange, ("#",), queue_type="stream"),
                                prefetch=50)
        later.start()
        assert drain(later) == []
        publish(url, exchange, 1, first=10)
        assert drain(later, expecting=True) == [b"10"]
        later.close()
        # ... and one from a time, what arrived since.
        timed = broker.amqp.Consumer(url, broker.Subscription(name, exchange, ("#",), queue_type="stream",
                                                         stream_offset=since), prefetch=50)
        timed.start()
        assert drain(timed, expecting=True) == [b"%d" % n for n in range(5, 11)]
        timed.close()
    finally:
        first.delete()
        first.close()


POISON = '''
import os

def check(notice):
    if notice.rel_path.endswith("poison.txt"):
        os._exit(3)     # the work kills the process: no exception, no acknowledgement
    return notice
'''


def test_a_notice_whose_work_crashes_the_process_goes_to_the_retry_store_after_delivery_limit(pump):
    plugins = pump.base / "config" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "poison.py").write_text(textwrap.dedent(POISON))
    pump.subscriber_config(extra="queue_type quorum\ndelivery_limit 2\non_notice python:poison:check\n"
                                 "retry_delay 1h")
    (pump.src / "poison.txt").write_text("poison")
    pump.post(pump.src / "poison.txt")
    crashes, log = 0, ""
    for _ in range(4):
        subscriber = pump.foreground()
        try:
            status = subscriber.wait(timeout=20)
        except Exception:       # noqa: BLE001 - still running: the poison no longer reaches the work
            break
        assert status == 3, subscriber.stderr.read()
        crashes += 1
    assert crashes == 2         # delivered twice, crashed twice; the third delivery is not worked on
    assert wait_for(lambda: pump.queue_depth() == 0, timeout=20)
    (pump.src / "good.txt").write_text("good")
    pump.post(pump.src / "good.txt")
    assert wait_for(lambda: (pump.dst / "good.txt").exists(), timeout=20)     # the flow goes on
    _, log = pump.stop(subscriber)
    assert "poison.txt was delivered 3 times (delivery_limit 2)" in log
    assert "500 delivered 3 times, more than delivery_limit 2" in log
    retry_files = list((pump.base / "state" / "subscribe" / "sub").glob("retry.i*.db"))
    store = RetryStore(retry_files[0], ttl=86400)
    try:
        assert "poison.txt" in store and len(store) == 1
    finally:
        store.close()
    assert not (pump.dst / "poison.txt").exists()


def test_stream_offset_takes_a_word_or_a_time():
    kind = BY_NAME["stream_offset"].kind
    assert [kind.parse(word) for word in ("first", " NEXT ", "last")] == ["first", "next", "last"]
    moment = kind.parse("2026-12-03T06:00:00Z")
    assert moment == datetime.datetime(2026, 12, 3, 6, tzinfo=datetime.timezone.utc)
    assert kind.parse("2026-12-03T06:00:00") == moment            # no zone: UTC
    assert kind.format(moment) == "2026-12-03T06:00:00+00:00"
    for bad in ("yesterday", "", "2026-13-01"):
        with pytest.raises(ValueError):
            kind.parse(bad)


@pytest.mark.parametrize("queue_type, arguments", [
    ("classic", {"x-expires": 300_000, "x-message-ttl": 3_600_000}),
    ("quorum", {"x-queue-type": "quorum", "x-expires": 300_000, "x-message-ttl": 3_600_000}),
    # A stream refuses x-expires: it keeps what it holds for message_ttl instead.
    ("stream", {"x-queue-type": "stream", "x-max-age": "3600s"}),
])
def test_each_queue_type_is_declared_with_the_arguments_it_accepts(queue_type, arguments):
    sub = broker.Subscription("q", "x", ("#",), expire=300, message_ttl=3600, queue_type=queue_type)
    assert sub.arguments() == arguments
