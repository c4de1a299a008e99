"""Several broker URLs (the nodes of a cluster): parsing, credentials, and the order in which
they are tried (dd.broker.failover); then a real broker behind a dead one."""
import random
import threading

import pytest

from dd import broker
from dd.broker.failover import Endpoints
from dd.core import formats
from dd.core.credentials import Credentials, Url
from dd.core.errors import BrokerError, BrokerRefusal
from dd.core.options import BY_NAME
from tests.support.servers import free_port

NODES = "amqp://ann@n1/ amqp://ann@n2:5673/vh amqps://ann@n3/"


@pytest.mark.parametrize("option", ["broker", "post_broker", "report_upstream", "admin"])
def test_every_broker_option_takes_several_urls_in_the_order_written(option):
    kind = BY_NAME[option].kind
    value = kind.parse(f"  {NODES.replace(' ', '   ')} ")
    assert [str(url) for url in value.every] == NODES.split()
    assert str(value) == "amqp://ann@n1/"          # the value is the first; the rest are its alternates
    assert kind.format(value) == NODES
    assert kind.parse("amqp://ann@n1/").alternates == ()


def test_a_bad_url_among_several_is_refused_and_passwords_are_never_shown():
    kind = BY_NAME["broker"].kind
    with pytest.raises(ValueError, match="scheme must be amqp or amqps"):
        kind.parse("amqp://ann@n1/ https://ann@n2/")
    with pytest.raises(ValueError):
        kind.parse("   ")
    value = kind.parse("amqp://ann:secret1@n1/ amqp://ann:secret2@n2/")
    assert [url.password for url in value.every] == ["secret1", "secret2"]
    assert "secret" not in kind.format(value) + str(value) + repr(value) + repr(value.every)


def test_each_node_gets_its_password_from_credentials_conf():
    credentials = Credentials([Url.parse("amqp://ann:p1@n1/"), Url.parse("amqp://ann:p2@n2:5673/"),
                               Url.parse("amqps://ann:p3@n3/")])
    completed = credentials.complete(BY_NAME["broker"].kind.parse(NODES))
    assert [url.password for url in completed.every] == ["p1", "p2", "p3"]
    assert [str(url) for url in completed.every] == NODES.split()


def test_urls_are_tried_in_order_and_a_lost_connection_moves_to_the_next():
    endpoints = Endpoints(Url.parse_several(NODES))
    assert [endpoints.current.host, endpoints.advance().host, endpoints.advance().host,
            endpoints.advance().host] == ["n1", "n2", "n3", "n1"]
    down = {"n1"}

    def connect(url):
        if url.host in down:
            raise BrokerError(f"cannot connect to broker {url}: refused")
        return url.host
    endpoints = Endpoints(Url.parse_several(NODES))
    assert endpoints.first_answering(connect) == "n2" and endpoints.current.host == "n2"
    # n2 lost: the next one, not n2 again, nor the first written.
    assert endpoints.reconnect(connect) == "n3"
    down = {"n1", "n2", "n3"}
    with pytest.raises(BrokerError, match="n2"):      # a whole round failed: the last one's error
        endpoints.first_answering(connect)


def test_shuffle_spreads_instances_over_the_nodes():
    firsts = {Endpoints(Url.parse_several(NODES), shuffle=True, rng=random.Random(seed)).current.host
              for seed in range(20)}
    assert firsts == {"n1", "n2", "n3"}
    shuffled = Endpoints(Url.parse_several(NODES), shuffle=True, rng=random.Random(1))
    assert sorted(str(url) for url in shuffled.urls) == sorted(NODES.split())


def test_a_refusal_is_raised_at_once_and_a_stop_ends_the_rounds():
    tried = []

    def refuse(url):
        tried.append(url.host)
        raise BrokerRefusal(f"broker {url} refused the login of user 'ann'")
    with pytest.raises(BrokerRefusal):
        Endpoints(Url.parse_several(NODES)).first_answering(refuse)
    assert tried == ["n1"]      # the same users on every node: no use asking the others

    stop = threading.Event()
    rounds = []

    def down(url):
        rounds.append(url.host)
        if len(rounds) == 6:
            stop.set()
        raise BrokerError(f"cannot connect to broker {url}")
    assert Endpoints(Url.parse_several(NODES)).reconnect(down, stop=stop, first_delay=0.01) is None
    assert rounds == ["n2", "n3", "n1", "n2", "n3", "n1"]     # whole rounds, from the node after the lost one
    with pytest.raises(BrokerError):
        Endpoints(Url.parse_several(NODES)).reconnect(down, give_up_after=0.05, first_delay=0.01)


@pytest.mark.broker
def test_a_publisher_and_a_consumer_go_past_a_node_that_does_not_answer(broker_url, exchange):
    real = Url.parse(broker_url)
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}{real.path}"
    url = Url.parse_several(f"{dead} {broker_url}")
    consumer = broker.consumer(url, broker.Subscription(f"q_guest.failover_{exchange}", exchange, ("#",)))
    publisher = broker.publisher(url)
    try:
        consumer.start()
        publisher.publish(exchange, formats.Message("v02.post.a", b"a", {}, "text/plain"))
        assert publisher.wait(10) == []
        assert publisher.url == real and consumer.url == real
        assert [d.body for d in consumer.fetch(5.0)] == [b"a"]
    finally:
        consumer.delete()
        consumer.close()
        publisher.close()
