"""dd over MQTT, with real processes and the session's own Mosquitto (tests.support.mosquitto):
dd_post → Mosquitto → nginx → dd_subscribe mirrors the awkward tree over mqtt://, mqtts://,
ws:// and wss://; instances share a subscription; a broker restart loses nothing; the ACL
holds (and dd_audit writes one that does); dd_shovel bridges AMQP and MQTT both ways; watch,
sara, log, poll and sender work over MQTT, and so does the log router; dd and sr3 (metpx-sr3)
mirror each other's posts over MQTT."""
import os
import re
import secrets
import subprocess
import sys

import pytest

from dd import broker
from dd.core import report
from dd.core.credentials import Url
from dd.core.errors import BrokerRefusal
from dd.core.formats import Message
from tests.support.pump import Pump, compare, manifest, reachable_by_workers, wait_for
from tests.support.servers import free_port
from tests.support.sr3peer import Sr3Peer
from tests.test_mirror import make_tree, mirrored
from tests.test_poll import Poller
from tests.test_watch import Watcher

pytestmark = pytest.mark.broker


@pytest.fixture
def mqtt_pump(tmp_path, mosquitto, nginx_server):
    the_pump = Pump(tmp_path, mosquitto.url("dd"), nginx_server)
    the_pump.env["SSL_CERT_FILE"] = str(mosquitto.ca_file)
    yield the_pump
    the_pump.close()


def delivered_paths(log):
    """The relative paths a subscriber's log says it delivered (201)."""
    return [path.rsplit("/", 1)[-1] for path in re.findall(r"201 delivered\S* (\S+)", log)]


def posted_and_mirrored(pump, expected, count, timeout=60):
    """Declare the subscriber, post the whole tree (`count` files), mirror it in the
    foreground: byte-identical, cleanly stopped; the subscriber's log."""
    pump.subscriber_config()        # declares the persistent session: notices wait in it
    posted = pump.post(pump.src)
    assert f"{count} announced, 0 not announced" in posted.stderr, posted.stderr
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=timeout)
    status, log = pump.stop(subscriber)
    assert compare(expected, manifest(pump.dst)) == ([], [], []), log[-2000:]
    assert arrived and status == 0 and "Traceback" not in log
    return log


@pytest.mark.parametrize("tls", [False, True], ids=["mqtt", "mqtts"])
def test_the_awkward_tree_mirrors_byte_identical_over_mqtt(mqtt_pump, mosquitto, tls):
    pump = mqtt_pump
    pump.broker_url = mosquitto.url("dd", tls=tls)
    log = posted_and_mirrored(pump, make_tree(pump.src), 300, timeout=90)
    assert "3.1.1" not in log


def test_a_certificate_the_client_does_not_trust_is_refused_by_name(mqtt_pump, mosquitto):
    pump = mqtt_pump
    del pump.env["SSL_CERT_FILE"]
    pump.broker_url = mosquitto.url("dd", tls=True)
    (pump.src / "a.txt").write_text("x")
    posted = pump.post(pump.src / "a.txt", check=False)
    assert posted.returncode != 0
    assert "its TLS certificate is refused: self-signed certificate" in posted.stderr
    assert "Traceback" not in posted.stderr and "dd-secret" not in posted.stderr


def test_two_instances_share_one_subscription_each_gets_some_none_twice(mqtt_pump):
    pump = mqtt_pump
    for i in range(60):
        (pump.src / f"f{i:02d}").write_text(str(i))
    name = pump.subscriber_config(extra="instances 2")
    started = pump.command("subscribe", "start", name)
    assert started.returncode == 0, started.stderr
    assert wait_for(lambda: pump.command("subscribe", "status", name).returncode == 0, timeout=15)
    pump.post(pump.src)
    arrived = wait_for(lambda: len(manifest(pump.dst)) == 60, timeout=60)
    assert pump.command("subscribe", "stop", name).returncode == 0
    logs = sorted((pump.base / "logs").glob("subscribe_sub_*.log"))
    each = [delivered_paths(p.read_text()) for p in logs]
    assert arrived, [p.read_text()[-1500:] for p in logs]
    assert len(each) == 2 and all(each), each          # each instance got some
    assert sorted(each[0] + each[1]) == sorted(f"f{i:02d}" for i in range(60))    # together all, none twice


def test_a_broker_restarted_mid_flow_loses_nothing(mqtt_pump, mosquitto):
    pump = mqtt_pump
    expected = make_tree(pump.src, count=200, seed=11)
    paths = sorted(p for p in pump.src.rglob("*") if p.is_file())
    pump.subscriber_config()
    pump.post(*paths[:100])     # waits in the session of a subscriber not yet running
    subscriber = pump.foreground()
    assert wait_for(lambda: len(manifest(pump.dst)) >= 5, timeout=30)
    mosquitto.restart()         # some delivered, some sent and not yet acknowledged, some waiting
    pump.post(*paths[100:])
    arrived = wait_for(mirrored(pump, expected), timeout=120)
    status, log = pump.stop(subscriber)
    assert compare(expected, manifest(pump.dst)) == ([], [], []), log[-3000:]
    assert arrived and status == 0
    assert "reconnecting" in log and "Traceback" not in log


def test_what_is_published_after_a_broker_restart_waits_for_a_subscriber_still_away(mqtt_pump, mosquitto):
    # Mosquitto 2.0 forgets shared subscriptions at a restart: one instance subscribes plainly.
    pump = mqtt_pump
    expected = make_tree(pump.src, count=20, seed=12)
    pump.subscriber_config()    # the session and its subscription, kept by the broker
    mosquitto.restart()
    pump.post(pump.src)         # before the subscriber ever connects again
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=60)
    status, log = pump.stop(subscriber)
    assert compare(expected, manifest(pump.dst)) == ([], [], []), log[-3000:]
    assert arrived and status == 0


def test_a_user_cannot_publish_where_the_acl_does_not_let_it(mqtt_pump, mosquitto):
    pump = mqtt_pump
    (pump.src / "a.txt").write_text("x")
    pump.broker_url = mosquitto.url("ann")
    pump.exchange = "xs_bob"        # bob's topics: ann may not publish there
    refused = pump.post(pump.src / "a.txt", check=False)
    assert refused.returncode != 0
    assert "refused a message on topic xs_bob/v02/post from user 'ann': Not authorized" in refused.stderr
    assert "Traceback" not in refused.stderr and "ann-secret" not in refused.stderr
    pump.exchange = "xs_ann"        # its own
    assert "1 announced, 0 not announced" in pump.post(pump.src / "a.txt").stderr


def test_a_user_cannot_read_where_the_acl_does_not_let_it(mqtt_pump, mosquitto):
    # Mosquitto grants the subscription and delivers nothing the ACL keeps from its user.
    pump = mqtt_pump
    (pump.src / "a.txt").write_text("bob's")
    pump.exchange = "xs_bob"
    readers = {}
    for user in ("ann", "dd"):      # ann may not read bob's topics; dd, the pump's user, may
        pump.broker_url = mosquitto.url(user)
        pump.subscriber_config(name=user, directory=pump.base / f"dst_{user}")
        readers[user] = pump.foreground(user)
    pump.broker_url = mosquitto.url("bob")
    assert "1 announced, 0 not announced" in pump.post(pump.src / "a.txt").stderr
    assert wait_for(lambda: (pump.base / "dst_dd" / "a.txt").exists(), timeout=30)
    assert not wait_for(lambda: (pump.base / "dst_ann" / "a.txt").exists(), timeout=3)
    for process in readers.values():
        status, log = pump.stop(process)
        assert status == 0 and "Traceback" not in log


def _shovel(pump, name, broker_url, exchange, post_broker_url, post_exchange):
    path = pump.base / "config" / "shovel" / f"{name}.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"broker {broker_url}\nexchange {exchange}\npost_broker {post_broker_url}\n"
                    f"post_exchange {post_exchange}\n")
    pump.command("shovel", "declare", name, check=True)
    process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "shovel", "foreground", name], env=pump.env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pump.processes.append(process)
    return process


@pytest.mark.parametrize("direction", ["amqp-to-mqtt", "mqtt-to-amqp"])
def test_dd_shovel_bridges_amqp_and_mqtt(mqtt_pump, mosquitto, broker_url, direction):
    pump = mqtt_pump
    amqp_url, mqtt_url = broker_url, mosquitto.url("dd")
    source, destination = (amqp_url, mqtt_url) if direction == "amqp-to-mqtt" else (mqtt_url, amqp_url)
    expected = make_tree(pump.src, count=40, seed=5)
    posted_to = pump.exchange
    pump.exchange = f"{posted_to}_bridged"
    pump.broker_url = destination
    pump.subscriber_config()        # reads the bridged exchange on the other protocol
    shovel = _shovel(pump, "bridge", source, posted_to, destination, pump.exchange)
    pump.broker_url, pump.exchange = source, posted_to
    posted = pump.post(pump.src)
    assert "40 announced, 0 not announced" in posted.stderr
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=60)
    _, log = pump.stop(subscriber)
    _, shovel_log = pump.stop(shovel)
    assert arrived, (log[-1500:], shovel_log[-1500:])
    assert compare(expected, manifest(pump.dst)) == ([], [], [])
    assert "Traceback" not in log + shovel_log


def test_without_paho_an_mqtt_broker_is_a_one_line_error_saying_how_to_install_it(mqtt_pump):
    pump = mqtt_pump
    (pump.src / "a.txt").write_text("x")
    hidden = ("import runpy, sys; sys.modules['paho'] = None; sys.argv = ['dd_post'] + sys.argv[1:]; "
              "runpy.run_module('dd.cli.main', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", hidden, "post", f"--post_broker={pump.broker_url}",
                             f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}",
                             str(pump.src / "a.txt")],
                            env=pump.env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "MQTT brokers need paho-mqtt 2.1 or newer: paho-mqtt is not installed" in result.stderr
    assert "pip install 'metpx-dd[mqtt]'" in result.stderr
    assert "Traceback" not in result.stderr and "dd-secret" not in result.stderr


def test_watch_relay_subscribe_and_log_chain_over_mqtt(mqtt_pump, mosquitto):
    # dd_watch → MQTT → dd_sara (its tree, its data server) → MQTT → dd_subscribe, whose log
    # messages dd_log reads back over MQTT: every kind of step of a pump, over MQTT only.
    pump = mqtt_pump
    tree, data_port, relayed = pump.base / "tree", free_port(), f"{pump.exchange}_out"
    sara = pump.base / "config" / "sara" / "relay.conf"
    sara.parent.mkdir(parents=True)
    tree.mkdir()
    reachable_by_workers(tree)
    sara.write_text(f"broker {pump.broker_url}\nexchange {pump.exchange}\npost_broker {pump.broker_url}\n"
                    f"post_exchange {relayed}\npost_base_url http://127.0.0.1:{data_port}/\n"
                    f"data_server_port {data_port}\ndirectory {tree}\n")
    pump.command("sara", "declare", "relay", check=True)
    log_args = ["--broker", pump.broker_url, "--exchange", "xs_dd", "--topic_prefix", "v02.log"]
    assert pump.command("log", *log_args).returncode == 0     # its session collects from now on
    watched = pump.exchange
    pump.exchange = relayed
    pump.subscriber_config()
    pump.exchange = watched
    try:
        assert pump.command("sara", "start", "relay").returncode == 0
        subscriber = pump.foreground()
        watcher = Watcher(pump).start()
        for i in range(20):
            (pump.src / f"d{i % 3}").mkdir(exist_ok=True)
            (pump.src / f"d{i % 3}" / f"f{i:02d}.txt").write_text(f"file {i}\n" * i)
        expected = manifest(pump.src)
        arrived = wait_for(lambda: len(manifest(pump.dst)) == 20, timeout=60)
        watcher.stop()
        _, log = pump.stop(subscriber)
    finally:
        pump.command("sara", "stop", "relay")
    assert arrived, log[-2000:] + watcher.text()[-1000:]
    # The relay keeps each source's files below its name; the subscriber mirrors the relay.
    assert compare({f"dd/{path}": digest for path, digest in expected.items()}, manifest(pump.dst)) == ([], [], [])
    shown = pump.command("log", *log_args)
    assert shown.returncode == 0, shown.stderr
    # Both consumers report each delivery: the relay and the subscriber.
    lines = [line for line in shown.stdout.splitlines() if "201 delivered" in line]
    assert sum("/sara " in line for line in lines) == 20, shown.stdout[-2000:]
    assert sum("/subscribe " in line for line in lines) == 20, shown.stdout[-2000:]
    assert "Traceback" not in log + shown.stderr


def test_dd_audit_writes_mosquitto_files_that_keep_each_user_to_its_own_topics(tmp_path, own_mosquitto):
    port = free_port()
    users = {"admin": "dd", "feeder": "pumpfeed", "source": "ann", "subscriber": "bob"}
    passwords = {name: secrets.token_hex(8) for name in users.values()}
    config = tmp_path / "config"
    config.mkdir()
    (config / "credentials.conf").write_text(
        "".join(f"mqtt://{name}:{password}@127.0.0.1:{port}/\n" for name, password in passwords.items()))
    (config / "credentials.conf").chmod(0o600)
    (config / "admin.conf").write_text(f"admin mqtt://dd@127.0.0.1:{port}/\n" + "".join(
        f"declare {role} {name}\n" for role, name in users.items() if role != "admin"))
    files = tmp_path / "mosquitto-files"
    files.mkdir()
    written = subprocess.run([sys.executable, "-m", "dd.cli.main", "audit", "mosquitto",
                              "--password-file", str(files / "passwd"), "--acl-file", str(files / "acl")],
                             env={**os.environ, "DD_CONFIG_DIR": str(config)},
                             capture_output=True, text=True, timeout=60)
    assert written.returncode == 0, written.stderr
    assert "4 user(s) written" in written.stdout
    assert not any(password in (files / "passwd").read_text() + (files / "acl").read_text()
                   for password in passwords.values())
    server = own_mosquitto(files / "passwd", files / "acl")

    def url(name, password=None):
        return Url.parse(f"mqtt://{name}:{password or passwords[name]}@127.0.0.1:{server.port}/")

    def published(name, exchange):
        publisher = broker.publisher(url(name))
        try:
            publisher.publish(exchange, Message("v02.post.x", b"{}", {}, "application/json"), exchange)
            return publisher.wait(10) == []
        finally:
            publisher.close()

    assert published("ann", "xs_ann")
    assert not published("ann", "xs_bob") and not published("ann", "xpublic") and not published("ann", "xr_bob")
    assert not published("bob", "xs_ann")
    assert published("pumpfeed", "xpublic") and published("pumpfeed", "xr_ann")
    # Reading: bob gets what the pump publishes on xpublic, never ann's log messages on xr_ann.
    subscription = broker.Subscription("q_bob.audit", "xpublic", ("#",), expire=60)
    spy = broker.Subscription("q_bob.spy", "xr_ann", ("#",), expire=60)
    readers = [broker.consumer(url("bob"), each) for each in (subscription, spy)]
    for reader in readers:
        reader.start()
    assert published("pumpfeed", "xpublic") and published("pumpfeed", "xr_ann")
    public, spied = ([d.exchange for _ in range(8) for d in reader.fetch(0.25)] for reader in readers)
    for reader in readers:
        reader.close()
    assert public == ["xpublic"] and spied == []
    with pytest.raises(BrokerRefusal, match="refused the login: not authorized.*check the password"):
        broker.publisher(url("bob", "not-his")).open()


@pytest.mark.parametrize("protocol", ["amqp", "mqtt"])
def test_post_topic_and_topic_set_whole_topics_on_either_protocol(mqtt_pump, broker_url, protocol):
    # A WIS2 dataset's topic: every notice on it, whatever its directory; a subscription to
    # the topic with a one-level wildcard gets them.
    pump = mqtt_pump
    if protocol == "amqp":
        pump.broker_url = broker_url
    dataset = f"origin/a/wis2/{pump.exchange}/data/core/weather"
    path = pump.base / "config" / "subscribe" / "wis2.conf"
    path.parent.mkdir(parents=True)
    path.write_text(f"broker {pump.broker_url}\ntopic origin/a/wis2/+/data/core/#\ndirectory {pump.dst}\n")
    pump.command("subscribe", "declare", "wis2", check=True)
    raw = broker.consumer(Url.parse(pump.broker_url), broker.Subscription(
        f"q_dd.raw_{pump.exchange}", "origin", (f"a.wis2.{pump.exchange}.#",), expire=60))
    try:
        raw.start()
        (pump.src / "deep" / "er").mkdir(parents=True)
        (pump.src / "deep" / "er" / "obs.txt").write_text("synop")
        (pump.src / "top.txt").write_text("temp")
        posted = pump.post(pump.src, post_topic=dataset)
        assert "2 announced, 0 not announced" in posted.stderr
        subscriber = pump.foreground("wis2")
        arrived = wait_for(lambda: len(manifest(pump.dst)) == 2, timeout=30)
        _, log = pump.stop(subscriber)
        assert arrived, log[-2000:]
        seen = [d for _ in range(8) for d in raw.fetch(0.25)]
        raw.ack(seen)
        assert {(d.exchange, d.topic) for d in seen} == {("origin", f"a.wis2.{pump.exchange}.data.core.weather")}
    finally:
        raw.delete()
        raw.close()


@pytest.mark.parametrize("value", ["origin", "origin/a.b/c", "origin//a"])
def test_a_whole_topic_with_one_level_an_empty_one_or_a_dot_is_a_config_error(mqtt_pump, value):
    pump = mqtt_pump
    (pump.src / "a.txt").write_text("x")
    refused = pump.post(pump.src / "a.txt", check=False, post_topic=value)
    assert refused.returncode != 0
    assert "post_topic" in refused.stderr and "without dots" in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_the_tree_mirrors_over_mqtt_over_websockets(mqtt_pump, websocket_bridge, tls):
    # The firewall-friendly path: MQTT inside WebSocket frames, with a path, over TLS for wss.
    pump = mqtt_pump
    bridge = websocket_bridge(tls=tls)
    pump.broker_url = f"{'wss' if tls else 'ws'}://dd:dd-secret@127.0.0.1:{bridge.port}/mqtt"
    posted_and_mirrored(pump, make_tree(pump.src, count=60, seed=3), 60)
    assert set(bridge.paths) == {"/mqtt"}


def test_poll_and_sender_over_mqtt(mqtt_pump):
    # dd_poll lists the nginx-served tree and announces over MQTT; dd_sender reads the notices
    # over MQTT and pushes each file to its destination.
    pump = mqtt_pump
    expected = make_tree(pump.src, count=30, seed=9)
    destination = pump.base / "pushed"
    config = pump.base / "config" / "sender" / "push.conf"
    config.parent.mkdir(parents=True)
    config.write_text(f"broker {pump.broker_url}\nexchange {pump.exchange}\ndestination file:{destination}\n")
    pump.command("sender", "declare", "push", check=True)
    poller = Poller(pump, "p", pump.base_url, "").start()
    pump.component = "sender"
    sender = pump.foreground("push")
    arrived = wait_for(lambda: manifest(destination) == expected, timeout=60)
    poller.stop()
    status, log = pump.stop(sender)
    assert arrived, (compare(expected, manifest(destination)), log[-2000:], poller.text()[-1000:])
    assert status == 0 and "Traceback" not in log + poller.text()


def test_log_messages_go_back_to_their_source_over_mqtt_and_forged_ones_nowhere(mqtt_pump, mosquitto):
    # ann posts on xs_ann/, the pump's relay announces on xpublic/, bob downloads; the log router
    # reads every consumer's log messages through one wildcard and sends them to xr_ann/, where
    # ann's dd_log reads them. Mosquitto names no publisher: the ACL lets only bob (and the pump)
    # write under xs_bob/, so a log message read there is bob's, and one naming ann is forged.
    from tests.test_logroute import conf, delivered, start, stop
    pump = mqtt_pump
    config, tree, rel = pump.base / "config", pump.base / "tree", f"{pump.base.name}/a.txt"
    for component, name, text in (
            ("sara", "ingest", conf(broker=pump.broker_url, exchange="xs_ann", post_broker=pump.broker_url,
                                    post_exchange="xpublic", post_base_url=f"file://{tree}/", directory=tree,
                                    allowed_schemes="http file")),
            ("shovel", "logs", conf(broker=pump.broker_url, topic="+/v02/log/#", route_logs="on",
                                    post_broker=pump.broker_url)),
            ("subscribe", "bob", conf(broker=mosquitto.url("bob"), exchange="xpublic", allowed_schemes="file",
                                      directory=pump.dst))):
        (config / component).mkdir(parents=True, exist_ok=True)
        (config / component / f"{name}.conf").write_text(text)
        pump.command(component, "declare", name, check=True)
    ann_log = ["--broker", mosquitto.url("ann")]
    pump.command("log", *ann_log, check=True)     # ann's session collects from now on
    processes = [start(pump, "shovel", "logs"), start(pump, "sara", "ingest"), start(pump, "subscribe", "bob")]
    (pump.src / "a.txt").write_text("for bob")
    pump.command("post", f"--post_broker={mosquitto.url('ann')}", "--post_exchange=xs_ann",
                 f"--post_base_url={pump.base_url.removesuffix(pump.base.name + '/')}",
                 f"--post_base_dir={pump.src.parent}", pump.src / "a.txt", check=True)
    assert wait_for(lambda: (pump.dst / "ann" / rel).exists(), timeout=30), processes[1].log.read_text()
    forged = delivered("ann", "ann", f"ann/{rel}", "for bob")
    body, _ = report.encode(forged)
    publisher = broker.publisher(Url.parse(mosquitto.url("bob")))
    publisher.publish("xs_bob", Message(forged.topic, body, {}, report.CONTENT_TYPE), "forged")
    assert publisher.wait(10) == []
    publisher.close()
    seen = []

    def ann_has(*reports):
        shown = pump.command("log", *ann_log, "--json", check=True).stdout
        seen.extend(report.decode(line.encode()) for line in shown.splitlines())
        return {(made.user, made.rel_path) for made in seen} >= set(reports)
    assert wait_for(lambda: ann_has(("dd", rel), ("bob", f"ann/{rel}")), timeout=30, interval=0.5), \
        processes[0].log.read_text()[-3000:]
    assert wait_for(lambda: "[forged-log]" in processes[0].log.read_text(), timeout=10)
    router_log = stop(pump, processes[0])
    assert not any(made.user == "ann" for made in seen), seen
    assert "published by bob" in router_log and "Traceback" not in router_log


def test_dd_subscribe_mirrors_what_sr3_posts_over_mqtt(mqtt_pump):
    pump = mqtt_pump
    expected = make_tree(pump.src, count=40, seed=5)
    pump.subscriber_config(extra="topic_prefix v03")
    with Sr3Peer(pump.base / "sr3home", pump.broker_url) as peer:
        files = sorted(p for p in pump.src.rglob("*") if p.is_file())
        peer.post(files, exchange=pump.exchange, post_base_url=pump.base_url, post_base_dir=str(pump.src),
                  checksum="sha512")
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=60)
    _, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    assert log.count("201 delivered") == 40 and "[ERROR]" not in log


def test_sr3_subscribe_mirrors_what_dd_posts_over_mqtt(mqtt_pump):
    pump = mqtt_pump
    expected = make_tree(pump.src, count=40, seed=6)
    target = pump.base / "sr3mirror"
    with Sr3Peer(pump.base / "sr3home", pump.broker_url) as peer:
        # sr3 3.3.1 in the foreground only declares its MQTT sessions: its daemon consumes.
        peer.mirror("fromdd", pump.exchange, target)
        peer.start("subscribe", "fromdd")
        posted = pump.post(pump.src, post_format="sr_v03")
        assert "40 announced" in posted.stderr, posted.stderr
        arrived = wait_for(lambda: compare(expected, manifest(target)) == ([], [], []), timeout=90)
        assert arrived, peer.log("subscribe", "fromdd")[-3000:]


@pytest.mark.parametrize("headers", [{}, {"sum": "s,abc", "parts": "1,1024,1,0,0", "é": "ü", "n": 3}])
def test_publish_properties_are_packed_as_paho_packs_them(headers):
    # dd packs a PUBLISH's properties itself, once (paho's own packing costs a third of a
    # small publish): the bytes on the wire must be paho's.
    from dd.broker.mqtt import PacketTypes, Properties, _PublishProperties
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.ContentType = "application/json"
    if headers:
        theirs.UserProperty = [(str(k), str(v)) for k, v in headers.items()]
    assert _PublishProperties("application/json", headers).pack() == theirs.pack()
