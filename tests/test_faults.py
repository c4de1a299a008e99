"""Faults a pump meets in operation: a full disk.  Nothing is lost, every failure is
one clear line, and the flow resumes by itself once the cause is gone."""
import os
import sqlite3
import subprocess
import time

import pytest

from tests.support.pump import compare, manifest, wait_for


def kept(retry_db):
    with sqlite3.connect(retry_db) as db:
        return db.execute("SELECT count(*) FROM retry").fetchone()[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that fills up (needs root, as CI runs)."""
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_one_clear_error_per_file_and_nothing_is_lost_once_space_returns(pump, small_disk):
    for i in range(6):
        (pump.src / f"f{i}.bin").write_bytes(os.urandom(512 << 10))
    expected = manifest(pump.src)
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (15 << 18))         # 3.75 MiB: leaves room for no 512 KiB file
    pump.subscriber_config(extra="retry_delay 1s", directory=small_disk / "dst")
    pump.post(pump.src)
    subscriber = pump.foreground()
    retry = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"
    # Every notice acked into the retry store, no file in place, no temp file left behind.
    assert wait_for(lambda: pump.queue_depth() == 0 and retry.exists() and kept(retry) == 6, timeout=30)
    assert not list((small_disk / "dst").iterdir())
    ballast.unlink()                                                # space returns
    arrived = wait_for(lambda: compare(expected, manifest(small_disk / "dst")) == ([], [], []), timeout=60)
    _, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    full = [line for line in log.splitlines() if "No space left on device" in line]
    assert full and all("507" in line and "kept for retry" in line for line in full)
    assert "Traceback" not in log
    assert not [p for p in (small_disk / "dst").iterdir() if p.name.startswith(".")]   # no temp files left


def test_broken_transfers_are_detected_retried_and_never_accepted(pump):
    """30 % truncated, 10 % reset, 5 % hanging past the timeout, 5 % corrupt with the right
    length: every file ends verified, nothing wrong under a final name, bounded retries."""
    from tests.support.faultproxy import FaultProxy
    expected = {}
    for i in range(60):
        path = pump.src / f"d{i % 3}" / f"f{i:02d}.bin"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(os.urandom(1000 + i * 997))
    expected = manifest(pump.src)
    proxy = FaultProxy(pump.base_url, {"truncate": 0.3, "reset": 0.1, "hang": 0.05, "corrupt": 0.05},
                       hang_seconds=3, seed=7)
    try:
        pump.subscriber_config(extra="retry_delay 1s\ntimeout 1s\nthreads 4")
        pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                     f"--post_base_url={proxy.url}", f"--post_base_dir={pump.src}", pump.src,
                     check=True)
        subscriber = pump.foreground()
        arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=120)
        _, log = pump.stop(subscriber)
    finally:
        proxy.close()
    assert arrived, log[-3000:]
    assert "Traceback" not in log
    counts = proxy.counts
    # Every kind of fault was served, the corrupt bytes too: the identical trees say none got in.
    assert all(counts[f] > 0 for f in ("truncate", "reset", "hang", "corrupt")), counts
    assert sum(counts.values()) <= 10 * len(expected), counts   # bounded retries
    assert not [p for p in pump.dst.rglob(".*")]                # no partial files left


def test_a_subscriber_killed_ten_times_mid_transfer_loses_nothing_and_leaves_nothing(pump):
    import random
    import signal
    for i in range(100):
        (pump.src / f"big{i:03d}.bin").write_bytes(os.urandom(1 << 20))
    expected = manifest(pump.src)
    pump.subscriber_config(extra="rate_max 20M\nthreads 4\nretry_delay 1s\nexpire 1h")
    pump.post(pump.src)
    rng = random.Random(3)
    for _ in range(10):
        subscriber = pump.foreground()
        time.sleep(rng.uniform(0.3, 0.8))
        subscriber.send_signal(signal.SIGKILL)
        subscriber.communicate()
        # Whatever is under a final name is whole and right, at every kill.
        present = {p: s for p, s in manifest(pump.dst).items() if not p.split("/")[-1].startswith(".")}
        assert all(expected[p] == s for p, s in present.items())
    subscriber = pump.foreground()
    arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=120)
    _, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert not [p for p in pump.dst.rglob(".*")], "temporary files left behind"
    assert pump.queue_depth() == 0
