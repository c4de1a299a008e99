"""The duplicate stores, SQLite (one host) and Redis (several), held to one conformance
suite: one claimant wins, confirmed keys expire, dead claimants' keys are taken over, and
the store is shared by processes and survives restarts.  Then what only one of them does."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from dd.core.credentials import Url
from dd.core.errors import StoreUnavailable
from dd.store import nodupe, nodupe_redis, pidfile
from dd.core.notice import Checksum, Part
from tests.support.pump import wait_for
from tests.support.servers import free_port

KEY = nodupe.key("/tree", "a/b.txt", Checksum("sha256", "ab" * 32))


@pytest.fixture(params=["sqlite", "redis"])
def opening(request, tmp_path):
    """Python source of an expression opening the store under test (ttl 300), the same
    store each time: in this process or in another."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    where = "None" if url is None else f"Url.parse({url!r})"
    return (f"nodupe.opened({where}, {str(tmp_path / 's.sqlite')!r}, 300, 'sub/test')",
            "from dd.store import nodupe; from dd.core.credentials import Url; ")


@pytest.fixture
def open_store(opening):
    opened = []

    def open_one():
        opened.append(eval(opening[0], {"nodupe": nodupe, "Url": Url}))
        return opened[-1]
    yield open_one
    for store in opened:
        store.close()


def test_a_key_is_claimed_once_until_released(open_store):
    store = open_store()
    assert store.claim(KEY)
    assert not store.claim(KEY)            # in flight here: a duplicate
    store.release([KEY])
    assert store.claim(KEY)


def test_a_batch_of_claims_gives_what_claims_one_after_the_other_give(open_store):
    store = open_store()
    new, other = (nodupe.key("/tree", name, Checksum("md5", "00")) for name in ("new", "other"))
    assert store.claim(KEY)
    # A relay claims a batch's keys at once: in flight or twice in the batch, a duplicate.
    assert list(store.claim_each([new, KEY, new, other])) == [True, False, False, True]
    store.release([new])
    assert list(store.claim_each([new, new])) == [True, False]
    assert list(store.claim_each([])) == []


def test_a_confirmed_key_is_a_duplicate_for_ttl_then_purged(open_store):
    store = open_store()
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


def test_forgetting_a_path_makes_its_content_new_again(open_store):
    store = open_store()
    other = nodupe.key("/tree", "a/b.txt.more", Checksum("sha256", "00"))
    for key in (KEY, other):
        assert store.claim(key)
    store.confirm([KEY, other])
    store.forget("/tree", "a/b.txt")
    assert store.claim(KEY)
    assert not store.claim(other)          # another path with the same beginning stays


def test_confirmed_keys_survive_a_restart_and_a_dead_claimant_is_taken_over(opening, open_store):
    done, orphan = KEY, nodupe.key("/tree", "orphan", Checksum("md5", "00"))
    # A process claims two keys, confirms one and exits without resolving the other.
    script = (f"{opening[1]}s = {opening[0]}; "
              f"s.claim({done!r}); s.claim({orphan!r}); s.confirm([{done!r}]); s.close()")
    subprocess.run([sys.executable, "-c", script], check=True)
    store = open_store()
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
            db.executemany("INSERT INTO claims (path, content, at, owner) VALUES (?, ?, ?, ?)",
                           [(*nodupe.row_of(held), time.time(), str(me)),
                            (*nodupe.row_of(left), time.time(), str(before_reboot))])
        db.close()
        store = nodupe.Store(path, ttl=300)
        assert not store.claim(held)
        assert store.claim(left)
    finally:
        claimant.kill()
        claimant.wait()
    assert store.claim(held)                 # its claimant is gone


def test_a_store_of_whole_keys_made_by_an_earlier_dd_keeps_what_it_knew(tmp_path):
    path = tmp_path / "s.sqlite"
    confirmed, expired, other = (nodupe.key("/tree", name, Checksum("md5", "00")) for name in ("a", "b", "c"))
    with sqlite3.connect(path) as db:   # the schema of dd before digests
        db.execute("CREATE TABLE seen (key TEXT PRIMARY KEY, at REAL NOT NULL, owner TEXT NOT NULL)")
        db.executemany("INSERT INTO seen (key, at, owner) VALUES (?, ?, '')",
                       [(confirmed, time.time()), (expired, time.time() - 600)])
    db.close()
    store = nodupe.Store(path, ttl=300)
    assert not store.claim(confirmed)        # still a duplicate
    assert store.claim(expired) and store.claim(other)
    store.close()
    with sqlite3.connect(path) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    assert tables == {"claims"}


def test_a_store_row_is_small_whatever_the_length_of_the_path(tmp_path):
    """Ten million keys must make a tree shallow enough to stay in memory: rows of digests, not of keys."""
    store = nodupe.Store(tmp_path / "s.sqlite", ttl=300)
    keys = [nodupe.key("/a/destination", f"{'deep/' * 40}{n:08d}.bin", Checksum("sha512", "ab" * 64))
            for n in range(20_000)]
    assert all(store.claim(k) for k in keys)
    store.confirm(keys)
    store.close()
    with sqlite3.connect(tmp_path / "s.sqlite") as db:
        pages, free, size = (db.execute(f"PRAGMA {name}").fetchone()[0]
                             for name in ("page_count", "freelist_count", "page_size"))
    db.close()
    assert (pages - free) * size < 20_000 * 250, (pages - free) * size / 20_000   # whole keys: 930


def test_processes_claiming_the_same_keys_at_once_win_each_key_exactly_once(tmp_path, opening):
    go = tmp_path / "go"
    # Each racer opens the store, says it is ready, and starts claiming on the signal; a key
    # another racer has in hand is lost for this one (Redis says so with Held).
    script = (f"import os, sys, time; {opening[1]}s = {opening[0]}\n"
              f"from dd.store.nodupe_redis import Held\n"
              f"def claim(k):\n  try: return s.claim(k)\n  except Held: return False\n"
              f"open(sys.argv[1], 'w').close()\n"
              f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
              f"won = [k for k in (nodupe.key('/t', str(n), 'c') for n in range(500)) if claim(k)]\n"
              f"s.confirm(won); print(' '.join(won))")
    racers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f"ready{n}")],
                               stdout=subprocess.PIPE, text=True) for n in range(3)]
    assert wait_for(lambda: all((tmp_path / f"ready{n}").exists() for n in range(3)))
    go.touch()
    won = [out.split() for out, _ in (r.communicate(timeout=120) for r in racers)]
    assert all(r.returncode == 0 for r in racers)
    assert sorted(k for keys in won for k in keys) == sorted(nodupe.key("/t", str(n), "c") for n in range(500))


def _claimant(opening, keys, ready, lease=nodupe_redis.LEASE):
    """A process that opens the store with `lease`, claims `keys`, says so and waits to be killed."""
    script = (f"{opening[1]}from dd.store import nodupe_redis; nodupe_redis.LEASE = {lease}; "
              f"s = {opening[0]}; assert all(s.claim(k) for k in {keys!r}); "
              f"open({str(ready)!r}, 'w').close(); import time; time.sleep(300)")
    return subprocess.Popen([sys.executable, "-c", script])


@pytest.mark.parametrize("opening", ["redis"], indirect=True)
def test_a_key_another_hosts_live_claimant_holds_is_retried_and_taken_over_when_its_lease_lapses(
        opening, open_store, tmp_path):
    ready = tmp_path / "ready"
    claimant = _claimant(opening, [KEY], ready, lease=1.0)
    try:
        assert wait_for(ready.exists)
        store = open_store()
        # Not a duplicate: that claimant may die before it confirms (and our copy is the one left).
        with pytest.raises(nodupe_redis.Held, match="a/b.txt is being handled by another node"):
            store.claim(KEY)
    finally:
        os.kill(claimant.pid, signal.SIGKILL)   # as a node dies: no release, no goodbye
        claimant.wait()
    started = time.monotonic()
    assert wait_for(lambda: _claimed(store, KEY), timeout=10)
    assert time.monotonic() - started < 3.0     # once its 1 s lease lapsed


@pytest.mark.parametrize("opening", ["redis"], indirect=True)
def test_in_a_batch_only_the_key_another_hosts_live_claimant_holds_is_held(opening, open_store, tmp_path):
    ready, other = tmp_path / "ready", nodupe.key("/tree", "other", Checksum("md5", "00"))
    claimant = _claimant(opening, [KEY], ready)
    try:
        assert wait_for(ready.exists)
        held, won = open_store().claim_each([KEY, other])
    finally:
        os.kill(claimant.pid, signal.SIGKILL)
        claimant.wait()
    assert isinstance(held, nodupe_redis.Held) and "a/b.txt is being handled by another node" in str(held)
    assert won is True


def _claimed(store, key):
    try:
        return store.claim(key)
    except nodupe_redis.Held:
        return False


@pytest.mark.parametrize("opening", ["redis"], indirect=True)
def test_confirmed_keys_and_claims_expire_in_redis_itself(opening, open_store, redis_url):
    import redis

    store = open_store()
    store.ttl = 1.0
    assert store.claim(KEY)
    store.confirm([KEY])
    client = redis.Redis.from_url(redis_url)
    assert 0 < client.pttl(next(client.scan_iter("dd:nodupe:sub/test*"))) <= 2000
    assert wait_for(lambda: not list(client.scan_iter("dd:nodupe:sub/test*")), timeout=5)
    client.close()


def test_a_redis_that_does_not_answer_is_a_one_line_error_naming_it():
    url = Url.parse(f"redis://u:secret@127.0.0.1:{free_port()}/0")
    store = nodupe.opened(url, "/nonexistent/s.sqlite", 300, "sub/test")
    with pytest.raises(StoreUnavailable) as error:
        store.claim(KEY)
    message = str(error.value)
    assert message.startswith(f"nodupe_store redis://u@127.0.0.1:{url.port}/0 unavailable: ")
    assert "\n" not in message and "secret" not in message
    store.close()


def test_what_redis_did_not_take_is_done_before_the_next_claim(redis_user, caplog):
    store = nodupe.opened(Url.parse(redis_user.url), "/nonexistent", 300, "sub/test")
    other, third = (nodupe.key("/tree", name, Checksum("md5", "00")) for name in ("other", "third"))
    try:
        assert list(store.claim_each([KEY, third])) == [True, True]
        redis_user.answered(False)
        store.release([KEY, third])     # the work failed: later copies must be handled ...
        assert "2 change(s) of the duplicate store kept until it answers" in caplog.text
        with pytest.raises(StoreUnavailable, match="nodupe_store redis://dd-.*unavailable"):
            store.claim(other)          # ... so no claim before that release is done
        redis_user.answered(True)
        assert store.claim(KEY)         # released first: the retried copy is ours to handle
    finally:
        store.close()
