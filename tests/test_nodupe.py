"""The duplicate store: one claimant wins, confirmed keys expire, dead claimants' keys
are taken over, and the store is shared by processes and survives restarts."""
import sqlite3
import subprocess
import sys
import time
import uuid

from dd.store import nodupe, pidfile
from dd.core.notice import Checksum, Part
from tests.support.pump import wait_for

KEY = nodupe.key("/tree", "a/b.txt", Checksum("sha256", "ab" * 32))


def test_a_key_is_claimed_once_until_released(tmp_path):
    store = nodupe.Store(tmp_path / "s.sqlite", ttl=300)
    assert store.claim(KEY)
    assert not store.claim(KEY)            # in flight here: a duplicate
    store.release([KEY])
    assert store.claim(KEY)


def test_a_confirmed_key_is_a_duplicate_for_ttl_then_purged(tmp_path):
    store = nodupe.Store(tmp_path / "s.sqlite", ttl=300)
    assert store.claim(KEY, now=1000.0)
    store.confirm([KEY], now=1000.0)
    assert not store.claim(KEY, now=1299.0)
    assert store.claim(KEY, now=1301.0)    # expired: handled again
    store.confirm([KEY], now=1301.0)
    store.purge(now=1700.0)
    assert len(store) == 0


def test_parts_of_one_file_and_other_trees_are_not_duplicates():
    whole = Checksum("sha256", "cd" * 32)
    parts = {nodupe.key("/t", "f", whole, Part(4, 3, 1, n, Checksum("md5", str(n)))) for n in range(3)}
    assert len(parts | {nodupe.key("/t", "f", whole), nodupe.key("/u", "f", whole)}) == 5


def test_forgetting_a_path_makes_its_content_new_again(tmp_path):
    store = nodupe.Store(tmp_path / "s.sqlite", ttl=300)
    other = nodupe.key("/tree", "a/b.txt.more", Checksum("sha256", "00"))
    for key in (KEY, other):
        assert store.claim(key)
    store.confirm([KEY, other])
    store.forget("/tree", "a/b.txt")
    assert store.claim(KEY)
    assert not store.claim(other)          # another path with the same beginning stays


def test_confirmed_keys_survive_a_restart_and_a_dead_claimant_is_taken_over(tmp_path):
    path = tmp_path / "s.sqlite"
    done, orphan = KEY, nodupe.key("/tree", "orphan", Checksum("md5", "00"))
    # A process claims two keys, confirms one and dies without resolving the other.
    script = (f"from dd.store import nodupe; s = nodupe.Store({str(path)!r}, 300); "
              f"s.claim({done!r}); s.claim({orphan!r}); s.confirm([{done!r}])")
    subprocess.run([sys.executable, "-c", script], check=True)
    store = nodupe.Store(path, ttl=300)
    assert not store.claim(done)
    assert store.claim(orphan)


def test_a_claim_is_kept_by_its_live_claimant_only_not_by_its_pid_in_another_boot(tmp_path):
    path = tmp_path / "s.sqlite"
    nodupe.Store(path, ttl=300).close()
    claimant = subprocess.Popen(["sleep", "300"])
    try:
        me = pidfile.identify(claimant.pid)
        before_reboot = pidfile.Identity(me.pid, me.start_time, str(uuid.uuid4()))
        held, left = (nodupe.key("/tree", name, Checksum("md5", "00")) for name in ("held", "left"))
        with sqlite3.connect(path) as db:   # claims of two processes, one of another boot
            db.executemany("INSERT INTO seen (key, at, owner) VALUES (?, ?, ?)",
                           [(held, time.time(), str(me)), (left, time.time(), str(before_reboot))])
        db.close()
        store = nodupe.Store(path, ttl=300)
        assert not store.claim(held)
        assert store.claim(left)
    finally:
        claimant.kill()
        claimant.wait()
    assert store.claim(held)                 # its claimant is gone


def test_processes_claiming_the_same_keys_at_once_win_each_key_exactly_once(tmp_path):
    path, go = tmp_path / "s.sqlite", tmp_path / "go"
    # Each racer opens the store, says it is ready, and starts claiming on the signal.
    script = (f"import os, sys, time; from dd.store import nodupe; s = nodupe.Store({str(path)!r}, 300)\n"
              f"open(sys.argv[1], 'w').close()\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
              f"won = [k for k in map(str, range(500)) if s.claim(k)]\n"
              f"s.confirm(won); print(' '.join(won))")
    racers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"ready{n}")],
                               stdout=subprocess.PIPE, text=True) for n in range(3)]
    assert wait_for(lambda: all((tmp_path / f"ready{n}").exists() for n in range(3)))
    go.touch()
    won = [out.split() for out, _ in (r.communicate(timeout=120) for r in racers)]
    assert all(r.returncode == 0 for r in racers)
    assert sorted(k for keys in won for k in keys) == sorted(map(str, range(500)))
