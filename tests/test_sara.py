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

from dd.core import formats
from dd.broker import vhost_of
from dd.core.credentials import Url
from dd.core.notice import Op
from tests.support.brokers import queue_counts
from tests.support.pump import compare, manifest, reachable_by_workers, wait_for
from tests.support.servers import free_port, self_signed

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


def test_the_data_server_serves_https_with_its_certificate_and_subscribers_verify_it(pump, relay):
    cert, key = pump.base / "pump.pem", pump.base / "pump.key"
    self_signed(cert, key)
    (pump.src / "obs.txt").write_text("over TLS")
    https = f"https://127.0.0.1:{relay.data_port}/"
    name = relay.config("tls", pump.exchange, f"data_server_certificate {cert}\ndata_server_key {key}\n"
                                              f"post_base_url {https}")
    # Announcing http:// from an HTTPS data server is refused before anything starts.
    relay.config("mismatch", pump.exchange, f"data_server_certificate {cert}\ndata_server_key {key}")
    refused = pump.command("sara", "start", "mismatch")
    assert refused.returncode == 2 and "announces http, but the data server" in refused.stderr
    assert "Traceback" not in refused.stderr and pump.command("sara", "status", "mismatch").returncode == 3
    mirror = pump.base / "config" / "subscribe" / "mirror.conf"
    mirror.parent.mkdir(parents=True)
    mirror.write_text(f"broker {pump.broker_url}\nexchange {relay.post_exchange}\ndirectory {pump.dst}\n")
    pump.command("subscribe", "declare", "mirror", check=True)
    process = relay.foreground(name)
    pump.post(pump.src / "obs.txt")
    assert wait_for(lambda: relay.downstream.count() >= 1, timeout=30)
    [notice] = relay.downstream.notices()
    assert notice.base_url == https
    verified = urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(cert), retries=False)
    assert verified.request("GET", notice.url).data == b"over TLS"
    assert urllib3.PoolManager(retries=False).request("GET", notice.url.replace("https:", "http:")).status == 400
    # dd_subscribe trusts the pump's certificate through SSL_CERT_FILE, and only then.
    pump.component, pump.exchange = "subscribe", relay.post_exchange
    subscriber = pump.foreground("mirror")
    refused = wait_for(lambda: pump.queue_depth("mirror") == 0, timeout=30)
    _, log = pump.stop(subscriber)
    assert refused and "certificate verify failed" in log and not (pump.dst / "guest" / "obs.txt").exists()
    pump.publish_raw(formats.encode(notice).body)
    pump.env["SSL_CERT_FILE"] = str(cert)
    subscriber = pump.foreground("mirror")
    assert wait_for(lambda: (pump.dst / "guest" / "obs.txt").exists(), timeout=30)
    pump.stop(subscriber)
    relay.stop(process)
    assert (pump.dst / "guest" / "obs.txt").read_text() == "over TLS"


def test_the_data_server_refuses_trees_it_must_not_serve(pump, relay):
    # A tree that holds dd's own configuration (credentials.conf with every password).
    name = relay.config("greedy", pump.exchange)
    path = pump.base / "config" / "sara" / f"{name}.conf"
    path.write_text(path.read_text().replace(f"directory {relay.tree}", f"directory {pump.base}"))
    greedy = pump.command("sara", "start", name)
    assert greedy.returncode == 2 and "would serve dd's configuration directory" in greedy.stderr
    # A tree the workers (www-data) cannot reach: they are refused before nginx starts.
    closed = pump.base / "closed"
    closed.mkdir(mode=0o700)
    path.write_text(path.read_text().replace(f"directory {pump.base}", f"directory {closed / 'tree'}"))
    unreachable = pump.command("sara", "start", name)
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr and "chmod o+x" in unreachable.stderr
    assert "Traceback" not in greedy.stderr + unreachable.stderr


def test_private_data_is_not_served_over_plain_http_on_a_network(tmp_path, pump, relay):
    """Plain HTTP on an address other than loopback: /private/ answers 403, whatever the password."""
    from dd.pump import dataserver, nginx
    from dd.core.config import load
    from dd.core.environment import Environment
    from dd.store.state import ConfigState
    name = relay.config("open", pump.exchange, "data_server_host 0.0.0.0")
    env = Environment(stdout=None, stderr=None, config_dir=pump.base / "config", state_dir=pump.base / "state",
                      log_dir=pump.base / "logs", environ={})
    server = dataserver.DataServer(load("sara", name, [], env), ConfigState(env.state_dir, "sara", name), env)
    text = server.write_config().read_text()
    assert "location ^~ /private/ { return 403; }" in text and "auth_basic" not in text
    # The same directives, served on loopback for the test: no password opens /private/.
    base = tmp_path / "check"
    base.mkdir()
    for kind in nginx.TEMP_KINDS:
        (base / kind).mkdir()
    (tmp_path / "root" / "private" / "bob").mkdir(parents=True)
    (tmp_path / "root" / "private" / "bob" / "x").write_text("secret")
    port = free_port()
    (base / "nginx.conf").write_text(nginx.config(base=base, root=tmp_path / "root", port=port, user=("root", "root"),
                                                  private_refused=True))
    process = subprocess.Popen(nginx.command("/usr/sbin/nginx", base))
    try:
        assert wait_for(lambda: _answers(port), timeout=10)
        status = urllib3.PoolManager(retries=False).request(
            "GET", f"http://127.0.0.1:{port}/private/bob/x", headers=urllib3.make_headers(basic_auth="bob:pw")).status
    finally:
        process.terminate()
        process.wait()
    assert status == 403


def _answers(port):
    try:
        urllib3.PoolManager(retries=False).request("GET", f"http://127.0.0.1:{port}/")
        return True
    except urllib3.exceptions.HTTPError:
        return False
