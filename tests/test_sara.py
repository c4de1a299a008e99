"""dd_sara, a pump's relay: real broker, real nginx, real processes.

Two redundant feeds give one downstream notice per file; a relay killed with
SIGKILL and restarted loses nothing; the data server serves the pump's tree
with byte ranges; retention deletes (and announces) what is too old."""
import os
import signal
import subprocess
import sys

import amqp
import pytest
import urllib3

from dd import formats
from dd.broker import vhost_of
from dd.credentials import Url
from dd.notice import Op
from tests.brokers import queue_counts
from tests.pump import compare, manifest, reachable_by_workers, wait_for
from tests.servers import free_port

FILES = 500


class Downstream:
    """A queue bound to the relay's post_exchange, read by nobody but the test: each
    message in it is one downstream notice."""

    def __init__(self, broker_url, exchange):
        url = Url.parse(broker_url)
        self.connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                          password=url.password, virtual_host=url.path.lstrip("/"))
        self.connection.connect()
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.queue, _, _ = self.channel.queue_declare("", exclusive=True)
        self.channel.queue_bind(self.queue, exchange, "#")

    def count(self):
        return self.channel.queue_declare(self.queue, passive=True)[1]

    def notices(self):
        found = []
        while (message := self.channel.basic_get(self.queue, no_ack=True)) is not None:
            found.append(formats.decode(message.body, message.properties.get("application_headers")))
        return found

    def close(self):
        self.connection.close()


class Relay:
    """dd_sara configurations of one pump: a data tree, an outgoing exchange."""

    def __init__(self, pump):
        self.pump = pump
        reachable_by_workers(pump.base)
        self.tree = pump.base / "pumptree"
        #: Where the pump keeps what the test posts: the namespace of its source, the test's broker user.
        self.source = Url.parse(pump.broker_url).user
        self.own = self.tree / self.source
        self.post_exchange = f"{pump.exchange}_out"
        self.data_port = free_port()
        self.downstream = Downstream(pump.broker_url, self.post_exchange)
        self.processes = []

    def config(self, name, exchange, extra=""):
        path = self.pump.base / "config" / "sara" / f"{name}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"broker {self.pump.broker_url}\nexchange {exchange}\n"
                        f"post_broker {self.pump.broker_url}\npost_exchange {self.post_exchange}\n"
                        f"post_base_url http://127.0.0.1:{self.data_port}/\n"
                        f"data_server_port {self.data_port}\n{extra}\ndirectory {self.tree}\n")
        self.pump.command("sara", "declare", name, check=True)
        return name

    def foreground(self, name):
        log = open(self.pump.base / f"{name}.{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "sara", "foreground", name],
                                   env=self.pump.env, stdout=log, stderr=subprocess.STDOUT)
        process.log_path = log.name
        log.close()
        self.processes.append(process)
        return process

    def stop(self, process):
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        return open(process.log_path).read()

    def queue_depth(self, name):
        return self.downstream.channel.queue_declare(self._queue(name), passive=True)[1]

    def queue_counts(self, name):
        return queue_counts(vhost_of(Url.parse(self.pump.broker_url)), self._queue(name))

    def _queue(self, name):
        return (self.pump.base / "state" / "sara" / name / "queue").read_text().strip()

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        # A relay killed with SIGKILL leaves its data server running: stop stops it.
        for config in (self.pump.base / "config" / "sara").glob("*.conf"):
            self.pump.command("sara", "stop", config.stem)
        self.downstream.close()


@pytest.fixture
def relay(pump):
    the_relay = Relay(pump)
    yield the_relay
    the_relay.close()


def make_files(root, count=FILES):
    for i in range(count):
        path = root / f"d{i % 7}" / f"f{i:04d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(i % 50) + str(i).encode())
    return manifest(root)


def test_two_redundant_feeds_of_500_files_give_500_downstream_notices(pump, relay):
    expected = make_files(pump.src)
    feed_b = f"{pump.exchange}_b"
    relay.config("feed_a", pump.exchange)
    relay.config("feed_b", feed_b)
    # Both feeds carry every file: two sources, two exchanges, the same products.
    pump.post(pump.src, checksum="sha256")
    pump.post(pump.src, checksum="sha256", post_exchange=feed_b)
    a, b = relay.foreground("feed_a"), relay.foreground("feed_b")
    # Every notice of both feeds handled: none waiting, none held unacknowledged.
    drained = wait_for(lambda: relay.queue_counts("feed_a") == relay.queue_counts("feed_b") == (0, 0)
                       and relay.downstream.count() >= FILES, timeout=120)
    logs = relay.stop(a) + relay.stop(b)
    assert drained, logs[-3000:]
    assert relay.queue_depth("feed_a") == relay.queue_depth("feed_b") == 0
    lost, invented, changed = compare(expected, manifest(relay.own))
    assert (lost, invented, changed) == ([], [], [])
    assert sorted(manifest(relay.tree)) == sorted(f"guest/{p}" for p in expected)
    notices = relay.downstream.notices()
    assert len(notices) == FILES
    assert sorted(n.rel_path for n in notices) == sorted(f"guest/{p}" for p in expected)
    for notice in notices:
        assert notice.checksum.method == "sha256"
        assert notice.checksum.value == expected[notice.rel_path.removeprefix("guest/")]
        assert notice.base_url == f"http://127.0.0.1:{relay.data_port}/"
        assert notice.source == "guest"
    assert logs.count("duplicate (seen within nodupe_ttl)") == FILES
    assert "Traceback" not in logs


def test_a_relay_killed_mid_flow_and_restarted_loses_nothing(pump, relay):
    expected = make_files(pump.src)
    relay.config("feed", pump.exchange)
    pump.post(pump.src)
    first = relay.foreground("feed")
    assert wait_for(lambda: relay.downstream.count() >= 50, timeout=60)
    first.send_signal(signal.SIGKILL)
    first.wait()
    announced_before = relay.downstream.count()
    assert announced_before < FILES, "the relay finished before it was killed: nothing tested"
    second = relay.foreground("feed")
    notices = []

    def all_announced():
        notices.extend(relay.downstream.notices())
        return relay.queue_depth("feed") == 0 and {n.rel_path for n in notices} >= relayed

    relayed = {f"guest/{p}" for p in expected}
    drained = wait_for(all_announced, timeout=120)
    log = relay.stop(second)
    assert drained, log[-3000:]
    notices.extend(relay.downstream.notices())
    lost, invented, changed = compare(expected, manifest(relay.own))
    assert lost == [] and changed == []
    # A partial file of the killed instance may remain under its hidden temporary name.
    assert all(os.path.basename(p).startswith(".") and p.endswith(".tmp") for p in invented)
    assert {n.rel_path for n in notices} == relayed
    # What was recorded before the kill is not announced again: at most the batch in flight
    # (prefetch, 100) may be, when the kill fell between the broker's confirm and the record.
    assert len(notices) - FILES <= 100
    assert "Traceback" not in log


def test_dd_sara_start_serves_the_tree_with_byte_ranges_and_stop_stops_it(pump, relay):
    content = bytes(range(256)) * 40
    (pump.src / "big.bin").write_bytes(content)
    name = relay.config("pump", pump.exchange)
    http = urllib3.PoolManager(retries=False, timeout=10)
    started = pump.command("sara", "start", name)
    try:
        assert started.returncode == 0, started.stderr
        assert f"data server http://127.0.0.1:{relay.data_port}/ serving {relay.tree}: running" in started.stdout
        pump.post(pump.src / "big.bin")
        assert wait_for(lambda: relay.downstream.count() == 1, timeout=60)
        [notice] = relay.downstream.notices()
        response = http.request("GET", notice.url, headers={"Range": "bytes=100-1099"})
        assert response.status == 206
        assert response.data == content[100:1100]
        status = pump.command("sara", "status", name)
        assert status.returncode == 0 and "running (pid" in status.stdout
        # A second data server on the same port is refused, and its instances are not started.
        relay.config("clash", pump.exchange)
        clash = pump.command("sara", "start", "clash")
        assert clash.returncode == 1
        assert "cannot listen on 127.0.0.1" in clash.stderr and "Traceback" not in clash.stderr
        assert pump.command("sara", "status", "clash").returncode == 3
    finally:
        stopped = pump.command("sara", "stop", name)
    assert stopped.returncode == 0, stopped.stderr
    assert f"serving {relay.tree}: stopped" in stopped.stdout
    with pytest.raises(urllib3.exceptions.HTTPError):
        http.request("GET", notice.url)
    assert pump.command("sara", "status", name).returncode == 3


def test_retention_deletes_announces_and_prunes_what_is_too_old(pump, relay):
    expected = make_files(pump.src, 20)
    relay.tree.mkdir(parents=True)
    partial = relay.tree / ".left.over.0badf00d.tmp"   # a crashed download's temporary file
    partial.write_bytes(b"partial")
    name = relay.config("short", pump.exchange, "retention 2s\nretention_announce on")
    pump.post(pump.src)
    process = relay.foreground(name)
    notices = []

    def swept():
        notices.extend(relay.downstream.notices())
        return sum(n.op is Op.DELETE for n in notices) >= len(expected) and not any(relay.tree.iterdir())

    done = wait_for(swept, timeout=60)
    log = relay.stop(process)
    assert done, log[-3000:]
    written = sorted(n.rel_path for n in notices if n.op is Op.WRITE)
    deleted = sorted(n.rel_path for n in notices if n.op is Op.DELETE)
    assert written == deleted == sorted(f"guest/{p}" for p in expected)
    assert relay.tree.is_dir()                  # the tree itself stays
    assert "retention: deleted" in log and "Traceback" not in log
