"""A pump on several nodes: dd_sara processes on "hosts" of their own (own tree, state,
data server, post_base_url) consume one quorum queue and share their duplicate store and
their rate_max budget through Redis; a Redis that does not answer loses nothing.  Real
broker, real nginx, real Redis, real processes."""
import collections
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.support.pump import Pump, compare, manifest, reachable_by_workers, wait_for
from tests.support.redisserver import REDIS
from tests.support.servers import _start, _stop, free_port
from tests.test_sara import Downstream, make_files

FILES = 1000
#: Notices each relay may hold unacknowledged: the most a killed node can leave to relay again.
PREFETCH = 20


class Node:
    """One host of the pump: its own configuration, state and log directories, tree and data
    server; the configuration text shared by the nodes is given to `config`."""

    def __init__(self, base, pump, name):
        self.pump = pump
        self.base = base / name
        self.tree = self.base / "tree"
        self.tree.mkdir(parents=True)
        reachable_by_workers(self.tree)
        self.port = free_port()
        self.env = dict(os.environ, DD_CONFIG_DIR=str(self.base / "config"),
                        DD_STATE_DIR=str(self.base / "state"), DD_LOG_DIR=str(self.base / "logs"))
        self.processes = []

    def config(self, component, name, shared):
        path = self.base / "config" / component / f"{name}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        own = f"directory {self.tree}\n"
        if component == "sara":
            own += f"post_base_url http://127.0.0.1:{self.port}/\ndata_server_port {self.port}\n"
        path.write_text(shared + own)

    def command(self, component, *args):
        result = subprocess.run([sys.executable, "-m", "dd.cli.main", component, *args], env=self.env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"dd_{component} {' '.join(args)}: {result.stderr}"
        return result

    def foreground(self, component, name):
        log = open(self.base / f"{component}.{name}.{len(self.processes)}.log", "w")
        process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", component, "foreground", name],
                                   env=self.env, stdout=log, stderr=subprocess.STDOUT)
        process.log_path = log.name
        log.close()
        self.processes.append(process)
        return process

    def logs(self):
        return "".join(open(p.log_path).read() for p in self.processes)

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        for config in (self.base / "config" / "sara").glob("*.conf"):   # the data servers
            subprocess.run([sys.executable, "-m", "dd.cli.main", "sara", "stop", config.stem],
                           env=self.env, capture_output=True, timeout=60)
        for config in (self.base / "config" / "subscribe").glob("*.conf"):
            subprocess.run([sys.executable, "-m", "dd.cli.main", "subscribe", "stop", config.stem],
                           env=self.env, capture_output=True, timeout=60)


def _two_nodes(tmp_path, pump):
    made = [Node(tmp_path, pump, name) for name in ("node1", "node2")]
    try:
        yield made
    finally:
        for node in made:
            node.close()


@pytest.fixture
def nodes(tmp_path, pump):
    yield from _two_nodes(tmp_path, pump)


@pytest.fixture
def cluster_pump(tmp_path, rabbit_cluster, nginx_server):
    """A pump whose broker is the three-node cluster: its URLs name every node."""
    vhost = rabbit_cluster.add_vhost()
    the_pump = Pump(tmp_path, rabbit_cluster.urls(vhost), nginx_server)
    the_pump.first_node = rabbit_cluster.nodes[0].url(vhost)
    yield the_pump
    the_pump.close()
    rabbit_cluster.ctl(rabbit_cluster.nodes[0], "delete_vhost", vhost)


@pytest.fixture
def cluster_nodes(tmp_path, cluster_pump):
    yield from _two_nodes(tmp_path, cluster_pump)


def test_two_relay_nodes_on_one_quorum_queue_of_a_cluster_relay_each_file_once_though_one_is_killed(
        cluster_pump, cluster_nodes, redis_url):
    pump, nodes = cluster_pump, cluster_nodes
    expected = make_files(pump.src, FILES)
    out = f"{pump.exchange}_out"
    downstream = Downstream(pump.first_node, out)
    queue = f"q_guest.sara.relay.{pump.exchange}"
    # Every node of the cluster named, the relays spread over them, one quorum queue.
    shared = (f"broker {pump.broker_url}\nbroker_failover shuffle\nexchange {pump.exchange}\nqueue {queue}\n"
              f"queue_type quorum\nprefetch {PREFETCH}\n"
              f"post_broker {pump.broker_url}\npost_exchange {out}\nnodupe_store {redis_url}\n"
              f"retry_delay 1s\n")
    for node in nodes:
        node.config("sara", "relay", shared)
        node.command("sara", "declare", "relay")
    # Two feeds of every file on the queue: without a shared store, each node relays its copies.
    pump.post(pump.src, checksum="sha256")
    pump.post(pump.src, checksum="sha256")
    # A subscriber downstream mirrors what the nodes announce, from either's data server.
    mirror = pump.base / "mirror"
    subscriber = nodes[0]
    (subscriber.base / "config" / "subscribe").mkdir(parents=True)
    (subscriber.base / "config" / "subscribe" / "mirror.conf").write_text(
        f"broker {pump.broker_url}\nexchange {out}\ndirectory {mirror}\n")
    subscriber.command("subscribe", "declare", "mirror")
    one = nodes[0].foreground("sara", "relay")
    nodes[1].foreground("sara", "relay")
    mirroring = subscriber.foreground("subscribe", "mirror")
    notices = []

    def relayed():
        notices.extend(downstream.notices())
        return {n.rel_path for n in notices}

    assert wait_for(lambda: len(relayed()) >= FILES // 5, timeout=120), nodes[0].logs()[-3000:]
    one.send_signal(signal.SIGKILL)     # a node dies mid-flow: its unacked notices go to the other
    one.wait()
    assert len(relayed()) < FILES, "the flow ended before the kill: nothing tested"
    everything = {f"guest/{p}" for p in expected}
    done = wait_for(lambda: relayed() >= everything, timeout=240)
    assert done, nodes[1].logs()[-3000:]
    # What the killed node had in hand comes back once its lease lapses; then nothing more.
    time.sleep(15)
    relayed()
    assert wait_for(lambda: manifest(mirror) == {f"guest/{p}": s for p, s in expected.items()}, timeout=120)
    counts = collections.Counter(n.rel_path for n in notices)
    again = sum(c - 1 for c in counts.values())
    # Each file once: 2,000 notices in, 1,000 out, but for what the killed node had relayed
    # and not yet acknowledged (its prefetch at most), which the other node relays again.
    assert set(counts) == everything
    assert again <= PREFETCH, counts.most_common(5)
    bases = collections.Counter(n.base_url for n in notices)
    assert set(bases) == {f"http://127.0.0.1:{n.port}/" for n in nodes}  # each names its own node
    lost, invented, changed = compare({f"guest/{p}": s for p, s in expected.items()}, manifest(mirror))
    assert (lost, invented, changed) == ([], [], [])
    logs = nodes[0].logs() + nodes[1].logs()
    assert "Traceback" not in logs
    downstream.close()
    mirroring.send_signal(signal.SIGTERM)
    mirroring.wait(30)


RATE = 10_000_000           # rate_max 10M: bytes/s
BIG, BIG_SIZE = 24, 5_000_000


def _bytes_below(roots):
    """Bytes in every file below `roots`, temporary ones included: what has moved so far."""
    total = 0
    for root in roots:
        for path in root.rglob("*"):
            try:
                total += path.stat().st_size if path.is_file() else 0
            except FileNotFoundError:
                pass
    return total


def test_rate_max_is_one_budget_for_four_instances_on_two_nodes(pump, nodes, redis_url):
    for n in range(BIG):
        (pump.src / f"big{n:02d}.bin").write_bytes(os.urandom(BIG_SIZE))
    queue = f"q_guest.subscribe.rate.{pump.exchange}"
    shared = (f"broker {pump.broker_url}\nexchange {pump.exchange}\nqueue {queue}\nprefetch 2\n"
              f"instances 2\nthreads 1\nrate_max 10M\nrate_store {redis_url}\n")
    for node in nodes:
        node.config("subscribe", "rate", shared)
        node.command("subscribe", "declare", "rate")
    pump.post(pump.src)
    total = BIG * BIG_SIZE
    trees = [node.tree for node in nodes]
    # From the first byte on either node (watched from before any starts) to the last.
    first_byte = []
    watching = threading.Thread(target=lambda: wait_for(lambda: _bytes_below(trees) > 0 and
                                                        not first_byte.append(time.monotonic()),
                                                        timeout=120, interval=0.02), daemon=True)
    watching.start()
    for node in nodes:
        node.command("subscribe", "start", "rate")
    assert wait_for(lambda: len(manifest(nodes[0].tree)) + len(manifest(nodes[1].tree)) == BIG
                    and _bytes_below(trees) == total, timeout=120, interval=0.05)
    rate = total / (time.monotonic() - first_byte[0])
    for node in nodes:
        node.command("subscribe", "stop", "rate")
    # Four instances, each allowed rate_max: together they move rate_max, not four times it.
    assert 0.85 * RATE <= rate <= 1.15 * RATE, f"{rate / 1e6:.1f} MB/s"
    # ... and all four moved some of it, on both nodes.
    logs = "".join(p.read_text() for node in nodes for p in (node.base / "logs").rglob("*.log"))
    assert all(manifest(tree) for tree in trees), logs[-2000:]


def test_notices_redis_does_not_answer_for_are_kept_for_retry_and_delivered_once_it_does(pump, tmp_path):
    files = make_files(pump.src, 5)
    port = free_port()      # nothing listens there yet
    store = f"redis://127.0.0.1:{port}/0"
    pump.subscriber_config(extra=f"nodupe_ttl 5m\nnodupe_store {store}\nretry_delay 1s\n")
    pump.post(pump.src)
    log = pump.base / "sub.log"
    with open(log, "w") as out:
        subscriber = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "sub"],
                                      env=pump.env, stdout=out, stderr=subprocess.STDOUT)
    pump.processes.append(subscriber)
    unavailable = f"nodupe_store {store} unavailable: "
    assert wait_for(lambda: log.exists() and log.read_text().count(unavailable) >= 5, timeout=60)
    assert not manifest(pump.dst)       # nothing delivered without its claim ...
    redis = _start([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", ""],
                   port, tmp_path / "redis.log")
    try:                                # ... and everything once Redis answers
        delivered = wait_for(lambda: manifest(pump.dst) == files, timeout=60)
    finally:
        subscriber.send_signal(signal.SIGTERM)
        status = subscriber.wait(30)
        _stop(redis)
    text = log.read_text()
    assert delivered, text[-3000:]
    assert status == 0 and "Traceback" not in text
    # One line for each notice, naming the store and the fix, and the notice kept.
    kept = [line for line in text.splitlines() if unavailable in line and "kept for retry" in line]
    assert len(kept) >= 5 and all("(start that Redis, or correct the URL)" in line for line in kept)
