"""A pump's broker on a three-node RabbitMQ cluster of the tests' own: a node dies (SIGKILL)
mid-flow, and nothing is lost.  The subscriber and dd_post name every node (broker, post_broker)
and declare a quorum queue; they move to another node within seconds."""
import subprocess
import sys
import time

import pytest

from dd.core.credentials import Url
from dd.store import metrics
from tests.test_ctl import Ctl
from tests.support.pump import Pump, compare, manifest, wait_for
from tests.test_mirror import make_tree

pytestmark = pytest.mark.broker

FILES = 1000
PREFETCH = 10
#: What a subscriber may still deliver after its node died without a new delivery: the
#: batch it works on and what it holds (prefetch).
SLACK = PREFETCH + PREFETCH // 2
#: Warnings and errors only: nobody reads the subscriber's stderr before it ends, and a
#: thousand lines would fill the pipe and stall it.
QUIET = "log_level warning\nlog_reports off\n"
RESUME_WITHIN = 10.0


@pytest.fixture
def cluster_pump(tmp_path, rabbit_cluster, nginx_server):
    vhost = rabbit_cluster.add_vhost()
    the_pump = Pump(tmp_path, rabbit_cluster.urls(vhost), nginx_server)
    the_pump.vhost = vhost
    yield the_pump
    the_pump.close()
    for node in rabbit_cluster.nodes:       # a test that failed half-way leaves none down
        if not node.answers():
            rabbit_cluster.restart(node)
    rabbit_cluster.ctl(rabbit_cluster.nodes[0], "delete_vhost", vhost)


def queue_depth(cluster, pump, name="sub"):
    """(ready, unacknowledged) of the subscriber's queue, asked of a node that is up."""
    queue = (pump.base / "state" / pump.component / name / "queue").read_text().strip()
    node = cluster.running()[0]
    out = cluster.ctl(node, "list_queues", "-p", pump.vhost, "name", "messages_ready",
                      "messages_unacknowledged").stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == queue:
            return int(words[1]), int(words[2])
    raise AssertionError(f"queue {queue} not found on {node.name}: {out}")


def delivered(pump, expected):
    return len(set(manifest(pump.dst)) & set(expected))


def leader_of(cluster, pump, name="sub"):
    queue = (pump.base / "state" / pump.component / name / "queue").read_text().strip()
    out = cluster.ctl(cluster.running()[0], "list_queues", "-p", pump.vhost, "name", "leader").stdout
    return dict(line.split()[:2] for line in out.splitlines() if line.strip()).get(queue)


def node_of(pump):
    """The port of the broker node `dd_ctl status --json` says the subscriber is on."""
    _, report = Ctl(pump).json()
    url = report["configurations"][0]["broker_nodes"].get("1")
    return Url.parse(url).port if url else None


def kill_and_time_the_resumption(cluster, node, pump, expected):
    """SIGKILL `node` while the subscriber works; the seconds until files arrive again through
    another node (more than SLACK after the kill)."""
    at_kill = delivered(pump, expected)
    killed = time.monotonic()
    cluster.kill(node)
    assert wait_for(lambda: delivered(pump, expected) > min(at_kill + SLACK, len(expected) - 1),
                    timeout=60, interval=0.05), f"no delivery after the kill ({at_kill} before it)"
    return time.monotonic() - killed


def test_a_subscriber_mirrors_through_the_death_of_its_node(cluster_pump, rabbit_cluster):
    pump, cluster = cluster_pump, rabbit_cluster
    expected = make_tree(pump.src, count=FILES)
    pump.subscriber_config(extra=f"queue_type quorum\nprefetch {PREFETCH}\n{QUIET}")
    first = cluster.nodes[0]
    assert leader_of(cluster, pump) == first.name      # declared through the first URL: its queue is there
    posted = pump.post(pump.src, post_exchange=pump.exchange)
    assert posted.returncode == 0 and f"{FILES} announced, 0 not announced" in posted.stderr, posted.stderr
    subscriber = pump.foreground()
    try:
        assert wait_for(lambda: delivered(pump, expected) >= FILES // 4, timeout=60)
        assert wait_for(lambda: node_of(pump) == first.port, timeout=3 * metrics.INTERVAL)
        resumed = kill_and_time_the_resumption(cluster, first, pump, expected)
        # dd_ctl status tells which node the instance went on to.
        assert wait_for(lambda: node_of(pump) not in (first.port, None), timeout=3 * metrics.INTERVAL)
        _, report = Ctl(pump).json()
        assert report["configurations"][0]["queue_depth"] is not None    # asked of a node that is up
        _, table, _ = Ctl(pump)("status")
        assert f"127.0.0.1:{node_of(pump)}" in table.splitlines()[1].split()[-1]
        arrived = wait_for(lambda: delivered(pump, expected) == FILES, timeout=60)
        cluster.restart(first)      # back later: it rejoins, and the flow does not care
        drained = wait_for(lambda: queue_depth(cluster, pump) == (0, 0), timeout=30)
    finally:
        status, log = pump.stop(subscriber)
    lost, invented, changed = compare(expected, manifest(pump.dst))
    assert (len(lost), invented, changed, arrived, drained) == (0, [], [], True, True), log[-5000:]
    assert resumed <= RESUME_WITHIN, f"resumed {resumed:.1f} s after the node's death"
    assert status == 0 and "Traceback" not in log
    assert "lost the broker connection" in log
    assert leader_of(cluster, pump) != first.name       # another node leads the queue now


def test_dd_post_publishes_through_the_death_of_its_node(cluster_pump, rabbit_cluster):
    pump, cluster = cluster_pump, rabbit_cluster
    expected = make_tree(pump.src, count=FILES)
    first = cluster.nodes[0]
    # Declared through the first node, the queue's leader is the node dd_post publishes to; the
    # subscriber then reads through the others.
    config = pump.base / "config" / "subscribe" / f"{pump.subscriber_config(extra='queue_type quorum')}.conf"
    assert leader_of(cluster, pump) == first.name
    reversed_urls = " ".join(node.url(pump.vhost) for node in reversed(cluster.nodes))
    config.write_text(config.read_text().replace(pump.broker_url, reversed_urls) + QUIET)
    subscriber = pump.foreground()
    # The subscriber consumes before dd_post starts: dd_post announces a thousand files in
    # well under a second, and a subscriber still starting under a loaded CI let it finish
    # before the node's death (a file of the tree, announced again below as unchanged).
    pump.post(pump.src / sorted(expected)[0])
    assert wait_for(lambda: delivered(pump, expected) == 1, timeout=60)
    post_urls = " ".join(node.url(pump.vhost) for node in cluster.nodes)
    poster = subprocess.Popen(
        [sys.executable, "-m", "dd.cli.main", "post", f"--post_broker={post_urls}",
         f"--post_exchange={pump.exchange}", f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}",
         "--post_timeout=60s", str(pump.src)],
        env=pump.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Mid-flow: once some notices went through, the node dd_post publishes to dies.
        assert wait_for(lambda: delivered(pump, expected) >= 50 or poster.poll() is not None, timeout=60,
                        interval=0.02)
        mid_flow = poster.poll() is None
        cluster.kill(first)
        _, post_log = poster.communicate(timeout=120)
        assert poster.returncode == 0, post_log[-3000:]
        assert wait_for(lambda: delivered(pump, expected) == FILES, timeout=120)
        cluster.restart(first)
        assert wait_for(lambda: queue_depth(cluster, pump) == (0, 0), timeout=30)
    finally:
        if poster.poll() is None:
            poster.kill()
        status, log = pump.stop(subscriber)
    lost, invented, changed = compare(expected, manifest(pump.dst))
    assert (len(lost), invented, changed) == (0, [], []), post_log[-3000:] + log[-3000:]
    assert mid_flow, "dd_post ended before the kill: nothing was tested"
    assert f"{FILES} announced, 0 not announced" in post_log
    assert "guest:guest" not in post_log + log


def test_a_classic_queue_waits_for_its_node_and_what_it_could_not_take_is_said(cluster_pump, rabbit_cluster):
    pump, cluster = cluster_pump, rabbit_cluster
    first = cluster.nodes[0]
    pump.subscriber_config(extra=QUIET)       # classic: it lives on the first node only
    (pump.src / "before.txt").write_text("before")
    (pump.src / "during.txt").write_text("during")
    (pump.src / "after.txt").write_text("after")
    subscriber = pump.foreground()
    try:
        pump.post(pump.src / "before.txt")
        assert wait_for(lambda: (pump.dst / "before.txt").exists(), timeout=30)
        cluster.kill(first)
        # Published through the nodes that are up: confirmed, but no queue can take it.
        pump.broker_url = " ".join(node.url(pump.vhost) for node in cluster.nodes[1:])
        during = pump.post(pump.src / "during.txt")
        time.sleep(2 * 5.0)        # the subscriber tries again meanwhile (RETRY_CONSUME), and stays up
        alive_while_down = subscriber.poll() is None
        cluster.restart(first)
        pump.post(pump.src / "after.txt")
        resumed = wait_for(lambda: (pump.dst / "after.txt").exists(), timeout=60)
    finally:
        status, log = pump.stop(subscriber)
    assert alive_while_down and resumed, log[-3000:]
    assert "cannot consume from queue" in log and "Traceback" not in log
    assert "reached no queue" in during.stderr and "1 announced, 0 not announced" in during.stderr
    assert not (pump.dst / "during.txt").exists()      # the loss dd_cluster(7) warns of, said, not silent
