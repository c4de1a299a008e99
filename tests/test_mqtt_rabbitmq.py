"""dd over RabbitMQ's MQTT plugins (MQTT 3.1.1 only), on a RabbitMQ node of the session's own:
the tree mirrored over mqtt:// and ws://, one instance per subscription, and an AMQP poster
seen by an MQTT subscriber on the same broker (the plugin's exchange is amq.topic, its MQTT
topics the AMQP routing keys with / for .)."""
import pytest

from tests.support.pump import Pump, compare, manifest, wait_for
from tests.test_mirror import make_tree, mirrored
from tests.test_mqtt import posted_and_mirrored

pytestmark = pytest.mark.broker


@pytest.fixture
def rabbit_pump(tmp_path, rabbitmq_mqtt, nginx_server):
    the_pump = Pump(tmp_path, rabbitmq_mqtt.mqtt_url, nginx_server)
    yield the_pump
    the_pump.close()


@pytest.mark.parametrize("scheme", ["mqtt", "ws"])
def test_the_awkward_tree_mirrors_over_rabbitmq_mqtt_3_1_1(rabbit_pump, rabbitmq_mqtt, scheme):
    pump = rabbit_pump
    pump.broker_url = rabbitmq_mqtt.mqtt_url if scheme == "mqtt" else rabbitmq_mqtt.ws_url
    log = posted_and_mirrored(pump, make_tree(pump.src), 300, timeout=120)
    assert "speaks MQTT 3.1.1, not 5" in log      # said plainly


def test_a_second_instance_is_refused_where_there_are_no_shared_subscriptions(rabbit_pump):
    pump = rabbit_pump
    (pump.src / "a.txt").write_text("x")
    name = pump.subscriber_config(extra="instances 2")
    assert pump.command("subscribe", "start", name).returncode == 0
    pump.post(pump.src / "a.txt")
    arrived = wait_for(lambda: (pump.dst / "a.txt").exists(), timeout=30)
    second = pump.base / "logs" / "subscribe_sub_02.log"
    refused = wait_for(lambda: second.exists() and "set instances 1" in second.read_text(), timeout=30)
    # Status says it too, of the instance that runs.
    said = wait_for(lambda: "speaks MQTT 3.1.1 only: no shared subscriptions (one instance per subscription)"
                    in pump.command("ctl", "status").stdout, timeout=30)
    status = pump.command("ctl", "status")
    pump.command("subscribe", "stop", name)
    assert said, status.stdout + status.stderr
    assert arrived
    assert refused, second.read_text() if second.exists() else "no log of instance 2"
    assert "speaks MQTT 3.1.1 only, without shared subscriptions" in second.read_text()


def test_an_amqp_poster_and_an_mqtt_subscriber_on_the_same_rabbitmq_see_the_same_notices(rabbit_pump, rabbitmq_mqtt):
    pump = rabbit_pump
    expected = make_tree(pump.src, count=40, seed=2)
    pump.subscriber_config()        # MQTT: xtest_.../v02/post/#, bound by the plugin on amq.topic
    posted = pump.command("post", f"--post_broker={rabbitmq_mqtt.amqp_url}", "--post_exchange=amq.topic",
                          f"--post_topic_prefix={pump.exchange}.v02.post", f"--post_base_url={pump.base_url}",
                          f"--post_base_dir={pump.src}", pump.src)
    assert "40 announced, 0 not announced" in posted.stderr, posted.stderr
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=60)
    _, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert compare(expected, manifest(pump.dst)) == ([], [], [])


def test_the_tree_mirrors_over_wss_through_an_nginx_in_front_of_rabbitmq(rabbit_pump, nginx_wss):
    # The firewall-friendly path as a pump exposes it: TLS on the web server's port, the
    # WebSocket proxied to the broker.
    pump = rabbit_pump
    pump.broker_url, ca_file = nginx_wss
    pump.env["SSL_CERT_FILE"] = str(ca_file)
    posted_and_mirrored(pump, make_tree(pump.src, count=60, seed=4), 60)
