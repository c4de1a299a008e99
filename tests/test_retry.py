"""The retry store, and a subscriber that keeps failed notices across a restart."""
import http.server
import sqlite3
import threading

import pytest

from dd.store.retry import MAX_DELAY, RetryStore
from tests.support.pump import manifest, wait_for
from tests.support.servers import free_port


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock():
    return Clock()


def store_at(path, clock, **options):
    return RetryStore(path, ttl=options.pop("ttl", 3600), delay=options.pop("delay", 10), clock=clock,
                      **options)


def test_a_kept_notice_is_due_after_its_delay_and_survives_reopening(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock)
    store.put([("a/b.txt", b"notice-a", "502 reset")])
    assert store.due(10) == []
    clock.now += 10
    store.close()
    reopened = store_at(tmp_path / "r.db", clock)
    [entry] = reopened.due(10)
    assert (entry.key, entry.message, entry.attempts, entry.reason) == ("a/b.txt", b"notice-a", 1, "502 reset")
    assert len(reopened) == 1 and "a/b.txt" in reopened


def test_each_failure_doubles_the_wait_up_to_the_maximum(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock, ttl=10**9)
    store.put([("k", b"m", "failed")])
    waits = []
    for _ in range(12):
        start = clock.now
        while not store.due(1):
            clock.now += 1
        waits.append(clock.now - start)
        store.failed_again([(store.due(1)[0], "failed again")])
    assert waits[:4] == [10, 20, 40, 80]
    assert waits[-1] == MAX_DELAY


def test_an_entry_failing_longer_than_ttl_is_given_up(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock, ttl=100, delay=30)
    store.put([("k", b"m", "failed")])
    clock.now += 30
    assert store.failed_again([(store.due(1)[0], "again")]) == []
    clock.now += 70
    [given_up] = store.failed_again([(store.due(1)[0], "again")])
    assert given_up.key == "k" and len(store) == 0


def test_entries_come_back_in_the_order_they_first_failed(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock)
    for key in ("c", "a", "b"):
        store.put([(key, key.encode(), "failed")])
    clock.now += 10
    assert [e.key for e in store.due(10)] == ["c", "a", "b"]
    assert [e.key for e in store.due(2)] == ["c", "a"]


def test_a_newer_notice_for_the_path_replaces_the_kept_one_and_removal_forgets_it(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock)
    store.put([("p", b"old", "failed")])
    clock.now += 5
    store.put([("p", b"new", "failed")])
    assert len(store) == 1
    clock.now += 10
    assert [e.message for e in store.due(10)] == [b"new"]
    store.remove(["p", "never-kept"])
    assert len(store) == 0 and store.due(10) == []


def test_the_store_says_when_it_is_full(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock, capacity=2)
    store.put([("a", b"", "x")])
    assert not store.full
    store.put([("b", b"", "x")])
    assert store.full


def test_kept_notices_are_on_disk_when_put_returns(tmp_path, clock):
    store = store_at(tmp_path / "r.db", clock)
    store.put([("a", b"m", "x")])
    # Another connection (another process after a crash) sees the committed row.
    assert sqlite3.connect(tmp_path / "r.db").execute("SELECT key FROM retry").fetchall() == [("a",)]


class _Files(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_a_failed_download_is_kept_acked_and_delivered_after_a_restart(pump):
    """The data server is down: the notice is acked into the retry store; after a
    restart, once the server is up, the kept notice delivers the file."""
    port = free_port()
    source = pump.base / "late"
    source.mkdir()
    (source / "late.txt").write_bytes(b"worth the wait\n")
    pump.subscriber_config(extra="retry_delay 1s")
    posted = pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                          f"--post_base_url=http://127.0.0.1:{port}/", f"--post_base_dir={source}",
                          source / "late.txt", check=True)
    assert "1 announced" in posted.stderr
    subscriber = pump.foreground()
    retry_db = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"
    assert wait_for(lambda: pump.queue_depth() == 0 and retry_db.exists())
    _, log = pump.stop(subscriber)
    assert "kept for retry" in log
    assert not (pump.dst / "late.txt").exists()
    kept = sqlite3.connect(retry_db).execute("SELECT key FROM retry").fetchall()
    assert kept == [("late.txt",)]

    handler = lambda *a, **k: _Files(*a, directory=str(source), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        subscriber = pump.foreground()
        assert wait_for(lambda: (pump.dst / "late.txt").exists(), timeout=30)
        _, log = pump.stop(subscriber)
    finally:
        server.shutdown()
        server.server_close()
    assert manifest(pump.dst) == manifest(source)
    assert "Traceback" not in log
    assert sqlite3.connect(retry_db).execute("SELECT count(*) FROM retry").fetchone() == (0,)


class NoMoreFromTheBroker:
    def fetch(self, timeout):
        return []

    def finish(self, items):
        pass


def test_a_kept_notice_is_not_handed_out_again_while_its_batch_is_under_way(tmp_path, clock):
    from dd.core import formats
    from dd.core.notice import Checksum, Notice, now
    from dd.core.outcome import Outcome
    from dd.flow import Retrying
    store = store_at(tmp_path / "r.db", clock)
    store.put([(f"f{n}", formats.v02.encode(Notice(
        pubtime=now(), base_url="http://h/", rel_path=f"f{n}", size=1, checksum=Checksum("md5", "0" * 32)))[0], "502")
        for n in range(3)])
    clock.now += 10
    retrying = Retrying(NoMoreFromTheBroker(), store, max_notice_size=1 << 20, allowed_schemes=None)
    first = retrying.fetch(0)
    # A pipelined flow gathers the next batch before this one is finished: the entries are still due.
    assert sorted(i.notice.rel_path for i in first) == ["f0", "f1", "f2"]
    assert retrying.fetch(0) == []
    for item in first:
        item.outcome = Outcome(502, "still failing")
    retrying.finish(first)
    assert retrying.fetch(0) == []      # kept for a later attempt
    clock.now += MAX_DELAY
    assert sorted(i.notice.rel_path for i in retrying.fetch(0)) == ["f0", "f1", "f2"]
