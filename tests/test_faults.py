"""Faults a pump meets in operation: a full disk.  Nothing is lost, every failure is
one clear line, and the flow resumes by itself once the cause is gone."""
import os
import sqlite3
import subprocess

import pytest

from tests.pump import compare, manifest, wait_for


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
