"""Nothing lost while the broker goes away: 5,000 files through dd_post → dd_sara →
dd_subscribe (two instances) while RabbitMQ is restarted three times (down at least
10 s each) and killed with SIGKILL once.  Checked against a manifest of path → sha256:
lost, invented and changed counted apart, no notice left in any queue, and few
duplicate downloads.

This test stops the machine's RabbitMQ: it runs alone (as the suite does), and
always leaves the broker running."""
import random
import subprocess
import threading
import time

import pytest

from tests.support.brokers import queue_counts
from tests.support.pump import compare, manifest, reachable_by_workers, wait_for
from tests.support.servers import free_port

FILES = 5000
DOWN = 10.0


def _rabbitmqctl(*args, timeout=120):
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout)


def _await_broker(limit=180.0):
    """Until the node answers and has booted: a node just launched is not reachable at once."""
    deadline = time.monotonic() + limit
    while True:
        result = _rabbitmqctl("await_startup", "--timeout", "60", timeout=90)
        if result.returncode == 0:
            return
        assert time.monotonic() < deadline, f"RabbitMQ did not come back: {result.stderr}"
        time.sleep(1)


def restart(down=DOWN):
    """The broker's application stopped for `down` seconds, then started again."""
    assert _rabbitmqctl("stop_app").returncode == 0
    time.sleep(down)
    assert _rabbitmqctl("start_app").returncode == 0
    _await_broker()


def kill(down=DOWN):
    """The broker's VM killed with SIGKILL, then started as the machine starts it."""
    subprocess.run(["pkill", "-KILL", "-x", "beam.smp"], check=False)
    time.sleep(down)
    subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    _await_broker()


@pytest.fixture
def broker_comes_back():
    yield
    if _rabbitmqctl("status", timeout=60).returncode != 0:
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    _await_broker()


def make_files(root, count=FILES, seed=5):
    """Most small, some up to 1 MiB, one in a hundred up to 4 MiB, a few empty."""
    rng = random.Random(seed)
    for i in range(count):
        roll = rng.random()
        size = (0 if roll < 0.02 else rng.randrange(64 << 10) if roll < 0.9 else
                rng.randrange(1 << 20) if roll < 0.99 else rng.randrange(4 << 20))
        path = root / f"batch{i % 5}" / f"d{i % 17}" / f"f{i:05d}.dat"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(size))
    return manifest(root)


def test_five_thousand_files_survive_three_broker_restarts_and_a_kill(pump, vhost, broker_comes_back):
    expected = make_files(pump.src)
    port = free_port()
    reachable_by_workers(pump.base)     # the data server's workers run as www-data
    # The pump keeps the files below their source's name (the test's broker user), and the
    # mirror has them as the pump announces them.
    tree, mirror = pump.base / "pumptree", pump.base / "mirror"
    relayed, mirrored = tree / "guest", mirror / "guest"
    config = pump.base / "config"
    (config / "sara").mkdir(parents=True)
    (config / "sara" / "pump.conf").write_text(
        f"broker {pump.broker_url}\nexchange {pump.exchange}\nexpire 1h\nretry_delay 2s\npost_timeout 60s\n"
        f"post_broker {pump.broker_url}\npost_exchange {pump.exchange}_public\n"
        f"post_base_url http://127.0.0.1:{port}/\ndata_server_port {port}\ndirectory {tree}\n")
    pump.subscriber_config("mirror", directory=mirror,
                           extra=f"exchange {pump.exchange}_public\ninstances 2\nexpire 1h\nretry_delay 2s")
    pump.command("sara", "declare", "pump", check=True)
    assert pump.command("sara", "start", "pump").returncode == 0
    assert pump.command("subscribe", "start", "mirror").returncode == 0
    outages = []

    def outage_plan():
        for event in (restart, restart, kill, restart):
            time.sleep(8)
            outages.append(event.__name__)
            event()
    troubles = threading.Thread(target=outage_plan)
    troubles.start()
    try:
        # Posted a batch at a time, some while the broker is down: dd_post waits for it.
        for batch in sorted(pump.src.iterdir()):
            result = pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                                  f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}",
                                  "--post_timeout=90s", batch, timeout=300)
            assert result.returncode == 0, result.stderr[-2000:]
        troubles.join()
        done = wait_for(lambda: compare(expected, manifest(mirrored)) == ([], [], []), timeout=300, interval=2)
    finally:
        troubles.join()
        stopped = [pump.command(c, "stop", n) for c, n in (("subscribe", "mirror"), ("sara", "pump"))]
    lost, invented, changed = compare(expected, manifest(mirrored))
    assert (len(lost), len(invented), len(changed)) == (0, 0, 0), (lost[:5], invented[:5], changed[:5])
    assert done and outages == ["restart", "restart", "kill", "restart"]
    assert compare(expected, manifest(relayed)) == ([], [], [])
    assert sorted(p.name for p in tree.iterdir()) == sorted(p.name for p in mirror.iterdir()) == ["guest"]
    assert all(s.returncode == 0 for s in stopped)
    for component, name in (("sara", "pump"), ("subscribe", "mirror")):
        queue = (pump.base / "state" / component / name / "queue").read_text().strip()
        assert queue_counts(vhost, queue) == (0, 0), queue
    logs = "".join(p.read_text(errors="replace") for p in (pump.base / "logs").glob("subscribe_mirror_*.log"))
    downloads = logs.count("201 delivered")
    assert FILES <= downloads <= FILES * 1.02, downloads
    assert "Traceback" not in logs
