"""One big whole file over several connections (`parallel`), and downloads that continue
where an interrupted one stopped: through the real receiver, nginx and the range server,
and a dd_subscribe killed mid-transfer."""
import hashlib
import os
import random
import signal
import threading
import time
from pathlib import Path

import pytest

from dd.core import paths
from dd.core.credentials import Credentials, Url
from dd.core.notice import Checksum, Notice, from_timestamp, now
from dd.core.outcome import Code
from dd.delivery import ranges, resume
from dd.delivery.receive import Receiver
from dd.transfer import WRITING, Transports, temporary_name
from tests.support.pump import compare, manifest, wait_for
from tests.support.rangeserver import RangeServer

MiB = 1 << 20
SIZE = 40 * MiB + 12345     # ten pieces over 4 connections, the last one short


def write(path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def notice_of(path, base_dir, base_url, method="sha512"):
    data = path.read_bytes()
    return Notice(pubtime=now(), base_url=base_url, rel_path=os.path.relpath(path, base_dir), size=len(data),
                  checksum=Checksum(method, hashlib.new(method, data).hexdigest()),
                  mtime=from_timestamp(os.stat(path).st_mtime), mode=0o644)


def partial(tree, name):
    return os.path.join(tree.root, temporary_name(name, WRITING))


@pytest.fixture
def big(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    dst.mkdir()
    return write(src / "big.bin", SIZE), src, paths.Tree(dst)


def fetched(big, parallel, **behaviour):
    """The range server, set up with `behaviour`, after the big file came from it over
    `parallel` connections and is in place, byte-identical."""
    f, src, tree = big
    with RangeServer(src) as server:
        for name, value in behaviour.items():
            setattr(server, name, value)
        outcome = Receiver(Transports(), parallel=parallel).receive(notice_of(f, src, server.url), tree, "big.bin")
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == f.read_bytes()
    return server


@pytest.mark.parametrize("scheme, streams", [("http", 2), ("http", 4), ("https", 3)])
def test_pieces_over_several_connections_make_the_file_from_nginx(big, nginx_server, scheme, streams):
    f, _, tree = big
    target = nginx_server.root / f"ranges-{os.getpid()}-{time.monotonic_ns()}.bin"
    target.write_bytes(f.read_bytes())
    base_url = nginx_server.https_url if scheme == "https" else nginx_server.url
    try:
        notice = notice_of(target, nginx_server.root, base_url)
        transports = Transports(options={"https": {"verify": str(nginx_server.ca_file)}})
        outcome = Receiver(transports, parallel=streams).receive(notice, tree, "big.bin")
        assert outcome.code == Code.DELIVERED, outcome.message
        assert (Path(tree.root) / "big.bin").read_bytes() == f.read_bytes()
        assert os.listdir(tree.root) == ["big.bin"]
        assert os.getxattr(Path(tree.root) / "big.bin", resume.MARK, follow_symlinks=False) is None
    except OSError as error:   # no mark left on the delivered file: getxattr fails with ENODATA
        assert error.errno == 61
    finally:
        target.unlink()


def test_pieces_go_over_n_connections_at_once_and_never_appear_under_the_final_name(big):
    f, src, tree = big
    with RangeServer(src) as server:
        server.rate = 20 * MiB
        notice = notice_of(f, src, server.url)
        seen_final, seen = [], threading.Event()
        done = threading.Event()

        def watch():
            while not done.is_set():
                if (Path(tree.root) / "big.bin").exists() and not done.is_set():
                    seen_final.append(os.path.getsize(Path(tree.root) / "big.bin"))
                if os.path.exists(partial(tree, "big.bin")):
                    seen.set()
                time.sleep(0.01)
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            outcome = Receiver(Transports(), parallel=4).receive(notice, tree, "big.bin")
        finally:
            done.set()
            watcher.join()
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == f.read_bytes()
    assert seen.is_set() and not seen_final
    assert sorted(first for _, first, _ in server.requests) == [offset for offset, _ in ranges.plan(0, SIZE, 4)]
    assert server.most_active == 4      # each piece takes 0.4 s or more at 20 MiB/s: all four overlap
    assert server.served == SIZE


def test_each_stream_asks_for_its_next_piece_before_the_last_has_arrived(big):
    """On a long round trip a stream that asked only once a piece had all arrived would sit
    idle a round trip per piece: over HTTP the next request goes out on the same connection
    while the last answer is still coming (pipelining), and no more connections are opened."""
    server = fetched(big, 2, rate=10 * MiB)    # each piece takes 0.3 s or more
    connections = {}
    for port, _, ahead in server.answered:
        connections.setdefault(port, []).append(ahead)
    assert len(connections) == 2, server.answered
    assert len(server.answered) == len(ranges.plan(0, SIZE, 2)) > 2
    for asked_ahead in connections.values():   # all but each connection's last answer
        assert asked_ahead == [True] * (len(asked_ahead) - 1) + [False], server.answered
    assert server.served == SIZE


def test_a_server_that_closes_after_each_answer_gets_no_request_ahead(big):
    server = fetched(big, 2, close_each=True)
    assert len(server.answered) == len(ranges.plan(0, SIZE, 2))
    assert not any(ahead for _, _, ahead in server.answered), server.answered
    assert len({port for port, _, _ in server.answered}) == len(server.answered)
    assert server.served == SIZE


@pytest.mark.parametrize("password, delivered", [("secret", True), ("not it", False)])
def test_pieces_of_private_data_are_asked_for_with_the_password_and_only_with_the_right_one(
        big, password, delivered):
    """Requests sent ahead carry the password as the others do; a wrong one gets nothing."""
    f, src, tree = big
    with RangeServer(src) as server:
        server.password, server.rate = "secret", 10 * MiB
        credentials = Credentials([Url.parse(server.url.replace("://", f"://dd:{password}@"))])
        outcome = Receiver(Transports(credentials), parallel=2).receive(notice_of(f, src, server.url), tree, "big.bin")
    if not delivered:
        assert outcome.code != Code.DELIVERED and "password" in outcome.message, outcome.message
        assert os.listdir(tree.root) == [] and server.served == 0
        return
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == f.read_bytes()
    # Only the first request of each connection may go before the server said it asks.
    assert len(server.refused) <= 2 and not any(came for _, came in server.refused), server.refused
    assert any(ahead for _, _, ahead in server.answered), server.answered
    assert server.served == SIZE


def test_a_piece_cut_short_is_taken_up_where_it_stopped(big):
    piece = ranges.plan(0, SIZE, 4)[1][0]    # where the second piece starts
    server = fetched(big, 4, cut_once={("big.bin", piece): 3 * MiB})
    firsts = [first for _, first, _ in server.requests]
    assert piece + 3 * MiB in firsts, firsts     # asked again from where the cut left it
    assert server.served == SIZE


def test_a_piece_served_wrong_fails_the_checksum_and_the_file_is_fetched_again(big):
    server = fetched(big, 4, corrupt_once={("big.bin", ranges.plan(0, SIZE, 4)[2][0])})
    assert server.corrupted


def test_a_piece_that_keeps_failing_fails_the_notice_and_nothing_is_in_place(big):
    f, src, tree = big
    piece = ranges.plan(0, SIZE, 4)[1][0]    # where the second piece starts
    notice = notice_of(f, src, "http://127.0.0.1:9/")
    with RangeServer(src) as server:
        server.unavailable.add(("big.bin", piece))
        outcome = Receiver(Transports(), parallel=4).receive(notice_of(f, src, server.url), tree, "big.bin")
        assert [first for _, first, _ in server.requests].count(piece) == 0   # 503s are not GETs served
    assert outcome.code == Code.TRANSFER_FAILED and "503" in outcome.message, outcome.message
    assert not (Path(tree.root) / "big.bin").exists()
    # What arrived in order is kept for the next attempt, which continues it.
    assert resume.prefix(os.open(partial(tree, "big.bin"), os.O_RDONLY), notice) == piece
    with RangeServer(src) as server:
        outcome = Receiver(Transports(), parallel=4).receive(notice_of(f, src, server.url), tree, "big.bin")
        assert outcome.code == Code.DELIVERED, outcome.message
        assert server.served == SIZE - piece
    assert (Path(tree.root) / "big.bin").read_bytes() == f.read_bytes()


def test_a_server_that_ignores_ranges_gets_one_connection(big):
    fetched(big, 4, ignore_ranges=True)


# -- resuming ---------------------------------------------------------------------

def plant(tree, notice, data, mark_notice=None):
    """A partial file as a killed download leaves it: `data`, marked for `mark_notice`."""
    path = partial(tree, notice.rel_path)
    with open(path, "wb") as out:
        out.write(data)
        resume.mark(out.fileno(), mark_notice or notice)


def test_a_marked_prefix_is_continued_with_a_range_request(big):
    f, src, tree = big
    data = f.read_bytes()
    with RangeServer(src) as server:
        notice = notice_of(f, src, server.url)
        plant(tree, notice, data[:30 * MiB])
        outcome = Receiver(Transports()).receive(notice, tree, "big.bin")
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == data
    assert server.requests == [("big.bin", 30 * MiB, SIZE - 30 * MiB)]


def test_a_wrong_prefix_is_caught_by_the_checksum_and_the_file_fetched_again(big):
    f, src, tree = big
    data = f.read_bytes()
    with RangeServer(src) as server:
        notice = notice_of(f, src, server.url)
        plant(tree, notice, data[:MiB] + b"\0" + data[MiB + 1:30 * MiB])
        outcome = Receiver(Transports()).receive(notice, tree, "big.bin")
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == data
    assert [first for _, first, _ in server.requests] == [30 * MiB, 0]


def test_a_prefix_of_another_version_is_not_trusted(big):
    f, src, tree = big
    data = f.read_bytes()
    with RangeServer(src) as server:
        notice = notice_of(f, src, server.url)
        older = notice_of(f, src, server.url)
        older = older.__class__(**{**older.__dict__, "mtime": from_timestamp(1e9)})
        plant(tree, notice, data[:30 * MiB], mark_notice=older)
        outcome = Receiver(Transports()).receive(notice, tree, "big.bin")
    assert outcome.code == Code.DELIVERED, outcome.message
    assert server.requests == [("big.bin", 0, SIZE)]
    assert (Path(tree.root) / "big.bin").read_bytes() == data


def test_a_server_that_ignores_ranges_makes_the_download_start_over(big):
    f, src, tree = big
    data = f.read_bytes()
    with RangeServer(src) as server:
        server.ignore_ranges = True
        notice = notice_of(f, src, server.url)
        plant(tree, notice, data[:30 * MiB])
        outcome = Receiver(Transports()).receive(notice, tree, "big.bin")
    assert outcome.code == Code.DELIVERED, outcome.message
    assert (Path(tree.root) / "big.bin").read_bytes() == data


def test_a_subscriber_killed_at_90_percent_fetches_only_the_rest(pump):
    size = 64 * MiB
    f = write(pump.src / "big.bin", size, seed=5)
    expected = manifest(pump.src)
    with RangeServer(pump.src) as server:
        server.rate = 16 * MiB     # 90 % to the end: 0.4 s to kill it in
        pump.subscriber_config(extra="retry_delay 1s\nexpire 1h")
        pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                     f"--post_base_url={server.url}", f"--post_base_dir={pump.src}", f, check=True)
        subscriber = pump.foreground()
        part = pump.dst / temporary_name("big.bin", WRITING)
        reached = wait_for(lambda: part.exists() and part.stat().st_size >= 0.9 * size, timeout=60, interval=0.01)
        subscriber.send_signal(signal.SIGKILL)
        subscriber.communicate()
        assert reached
        assert not (pump.dst / "big.bin").exists()
        subscriber = pump.foreground()
        arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=60)
        _, log = pump.stop(subscriber)
        assert arrived, log[-2000:]
        assert "resuming after" in log
        again = server.served - size
    assert again <= 0.15 * size, f"{again} bytes fetched twice"
    assert not [p for p in pump.dst.rglob(".*")]


def test_a_subscriber_whose_piece_keeps_failing_keeps_the_notice_and_finishes_it_later(pump):
    import sqlite3
    size = 40 * MiB
    f = write(pump.src / "big.bin", size, seed=9)
    expected = manifest(pump.src)
    second = ranges.plan(0, size, 4)[1][0]
    retry = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"

    def kept():
        try:
            with sqlite3.connect(retry) as db:
                return db.execute("SELECT count(*) FROM retry").fetchone()[0]
        except sqlite3.OperationalError:   # not made yet
            return 0
    with RangeServer(pump.src) as server:
        server.unavailable.add(("big.bin", second))
        pump.subscriber_config(extra="parallel 4\nretry_delay 1s\nexpire 1h")
        pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                     f"--post_base_url={server.url}", f"--post_base_dir={pump.src}", f, check=True)
        subscriber = pump.foreground()
        # Not acknowledged as done: kept for retry, with nothing under the final name.
        assert wait_for(lambda: retry.exists() and kept() == 1, timeout=60)
        assert not (pump.dst / "big.bin").exists()
        server.unavailable.clear()
        arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=60)
        _, log = pump.stop(subscriber)
        assert arrived, log[-2000:]
        assert "503" in log and "resuming after" in log
    assert not [p for p in pump.dst.rglob(".*")]
