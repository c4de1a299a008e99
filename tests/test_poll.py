"""dd_poll on real servers (nginx autoindex, sshd, pyftpdlib) → RabbitMQ → dd_subscribe: files
added, changed and removed between polls are announced once, by one of two pollers of the
same tree (on one host, or on two sharing a Redis); a restart announces nothing twice; the
subscriber's mirror ends identical."""
import collections
import os
import time
from urllib.parse import quote

import pytest

from dd.core.notice import Op
from tests.support.pump import compare, manifest, wait_for
from tests.support.daemons import Daemon, Recorder

KINDS = ["http", "sftp", "ftp"]


def served(kind, request, pump):
    """(directory polled, its URL, configuration lines for its server) of one kind of server."""
    name = pump.base.name
    if kind == "http":
        return pump.src, pump.base_url, ""
    if kind == "sftp":
        server = request.getfixturevalue("sshd_server")
        lines = f"known_hosts {server.known_hosts}\nsftp_key {server.key_file}\n"
        return server.root / name, f"{server.url}/{quote(name)}/", lines
    server = request.getfixturevalue("ftp_server")
    credentials = pump.base / "config" / "credentials.conf"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text(server.url.replace("@", f":{server.password}@") + "\n")
    credentials.chmod(0o600)
    return server.root / name, f"{server.url}{quote(name)}/", ""


class Poller(Daemon):
    def __init__(self, pump, name, url, lines, host=None):
        """A poller of `url`; on a `host` of its own (own state, logs), or on the pump's."""
        env = None
        if host:
            env = dict(pump.env, DD_STATE_DIR=str(pump.base / host / "state"),
                       DD_LOG_DIR=str(pump.base / host / "logs"))
        super().__init__(pump, "poll", name, env)
        if host:
            self.log = pump.base / f"poll_{name}_{host}.log"
        config = pump.base / "config" / "poll" / f"{name}.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"post_broker {pump.broker_url}\npost_exchange {pump.exchange}\n"
                          f"poll_url {url}\npoll_interval 1s\n{lines}")

    def polls(self):
        return self.text().count("polled ")


def put(root, rel_path, data, mtime):
    path = root / rel_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))


@pytest.mark.parametrize("kind", KINDS)
def test_changes_are_announced_once_and_the_mirror_ends_identical(kind, request, pump):
    root, url, lines = served(kind, request, pump)
    start = 1_700_000_040                         # on a minute: nginx lists times to the minute
    put(root, "a.txt", b"first a", start)
    put(root, "sub/b bin#1", bytes(5000), start)
    put(root, "sub/deeper/c.dat", b"c" * 3, start)
    put(root, ".partial.tmp", b"a writer's temporary file", start)
    pump.subscriber_config(extra=lines)
    subscriber = pump.foreground()
    recorder = Recorder(pump)
    pollers = [Poller(pump, name, url, lines).start() for name in ("p1", "p2")]
    announced = collections.Counter()

    def settled(expected_polls=2):
        """The mirror equals the tree, once each poller polled `expected_polls` times more."""
        before = [p.polls() for p in pollers]
        assert wait_for(lambda: all(p.polls() >= b + expected_polls for p, b in zip(pollers, before)),
                        timeout=30), pollers[0].text()[-2000:]
        expected = {k: v for k, v in manifest(root).items() if not k.startswith(".")}
        assert wait_for(lambda: manifest(pump.dst) == expected, timeout=30), \
            compare(expected, manifest(pump.dst))
        for notice in recorder.drain():
            announced[notice.op.value, notice.rel_path, notice.size] += 1
            assert notice.url.startswith(url.rstrip("/")), notice.url   # downloaded from the server itself

    try:
        settled()
        assert announced == {("write", "a.txt", 7): 1, ("write", "sub/b bin#1", 5000): 1,
                             ("write", "sub/deeper/c.dat", 3): 1}
        put(root, "a.txt", b"second a, longer", start + 120)        # changed
        put(root, "sub/new.txt", b"new", start + 120)                # added
        (root / "sub/b bin#1").unlink()                              # removed
        settled()
        assert announced == {("write", "a.txt", 7): 1, ("write", "sub/b bin#1", 5000): 1,
                             ("write", "sub/deeper/c.dat", 3): 1, ("write", "a.txt", 16): 1,
                             ("write", "sub/new.txt", 3): 1, ("delete", "sub/b bin#1", None): 1}
        assert not (pump.dst / "sub/b bin#1").exists()

        # Restarted, with a change made while they were down: that change only, once.
        for poller in pollers:
            poller.stop()
        put(root, "sub/deeper/c.dat", b"c" * 30, start + 240)
        pollers = [poller.start() for poller in pollers]
        settled()
        assert sum(announced.values()) == 7 and announced["write", "sub/deeper/c.dat", 30] == 1
    finally:
        recorder.close()
        pump.stop(subscriber)


def test_first_poll_may_skip_what_is_there(request, pump):
    root, url, lines = served("http", request, pump)
    put(root, "old.txt", b"there before", 1_700_000_040)
    recorder = Recorder(pump)
    try:
        poller = Poller(pump, "skip", url, lines + "poll_first skip\n").start()
        assert wait_for(lambda: poller.polls() >= 2, timeout=30), poller.text()
        put(root, "new.txt", b"came after", 1_700_000_100)
        assert wait_for(lambda: poller.polls() >= 4, timeout=30), poller.text()
        poller.stop()
        assert [(n.op, n.rel_path) for n in recorder.drain()] == [(Op.WRITE, "new.txt")]
    finally:
        recorder.close()


def test_a_missing_poll_url_is_one_line(pump):
    config = pump.base / "config" / "poll" / "bad.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"post_broker {pump.broker_url}\npoll_url gopher://127.0.0.1/\n")
    started = time.monotonic()
    result = pump.command("poll", "foreground", "bad", timeout=30)
    assert result.returncode != 0 and time.monotonic() - started < 30
    assert "poll_url" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_pollers_on_hosts_sharing_a_redis_announce_each_change_once_and_a_new_host_nothing_old(
        request, pump, redis_url):
    import redis

    root, url, lines = served("http", request, pump)
    start = 1_700_000_040
    put(root, "a.txt", b"first a", start)
    put(root, "sub/b.txt", b"b" * 50, start)
    lines += f"nodupe_store {redis_url}\n"
    recorder = Recorder(pump)
    announced = collections.Counter()
    pollers = [Poller(pump, "feed", url, lines, host=host).start() for host in ("node1", "node2")]

    def settled(expected):
        """Each poller polled twice more; then what was announced since the last call."""
        before = [p.polls() for p in pollers]
        assert wait_for(lambda: all(p.polls() >= b + 2 for p, b in zip(pollers, before)), timeout=30), \
            [p.text()[-2000:] for p in pollers]

        def drained():
            announced.update((n.op.value, n.rel_path, n.size) for n in recorder.drain())
            return sum(announced.values()) >= expected
        assert wait_for(drained, timeout=10), announced
        got = dict(announced)
        announced.clear()
        return got

    try:
        assert settled(2) == {("write", "a.txt", 7): 1, ("write", "sub/b.txt", 50): 1}
        put(root, "a.txt", b"second a, longer", start + 120)
        put(root, "c.txt", b"c", start + 120)
        (root / "sub/b.txt").unlink()
        assert settled(3) == {("write", "a.txt", 16): 1, ("write", "c.txt", 1): 1,
                              ("delete", "sub/b.txt", None): 1}

        # Both down for longer than a claim lasts (its keys gone, as when they expire), and a
        # change meanwhile; then node2 back and node3, new, with nothing of its own: the
        # record they share says what was announced, so only that change, once.
        for poller in pollers:
            poller.stop()
        store = redis.Redis.from_url(redis_url)
        claims = list(store.scan_iter(match="dd:nodupe:*"))
        assert claims
        store.delete(*claims)
        store.close()
        put(root, "d.txt", b"dd", start + 240)
        pollers = [pollers[1].start(), Poller(pump, "feed", url, lines, host="node3").start()]
        assert settled(1) == {("write", "d.txt", 2): 1}
        assert all("Traceback" not in p.text() for p in pollers)
    finally:
        recorder.close()


def test_pollers_whose_redis_does_not_answer_say_so_and_announce_nothing(request, pump):
    from tests.support.servers import free_port

    root, url, lines = served("http", request, pump)
    put(root, "a.txt", b"a", 1_700_000_040)
    recorder = Recorder(pump)
    try:
        poller = Poller(pump, "feed", url, lines + f"nodupe_store redis://127.0.0.1:{free_port()}/0\n",
                        host="node1").start()
        said = "cannot compare the listing of " + url
        assert wait_for(lambda: poller.text().count(said) >= 2, timeout=30), poller.text()[-2000:]
        poller.stop()
        assert recorder.drain() == []
        assert "nodupe_store redis://127.0.0.1:" in poller.text() and "Traceback" not in poller.text()
    finally:
        recorder.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_name_that_is_not_utf8_is_named_and_the_rest_of_the_tree_announced(kind, request, pump):
    root, url, lines = served(kind, request, pump)
    put(root, "good.txt", b"g", 1_700_000_040)
    put(root, "old/ok.txt", b"ok", 1_700_000_040)
    put(root, os.fsdecode(b"old/caf\xe9.txt"), b"a Latin-1 name", 1_700_000_040)
    recorder = Recorder(pump)
    try:
        poller = Poller(pump, "odd", url, lines).start()
        assert wait_for(lambda: poller.polls() >= 3, timeout=30), poller.text()[-2000:]
        poller.stop()
        announced = sorted(notice.rel_path for notice in recorder.drain())
        text = poller.text()
        assert "Traceback" not in text and "internal error" not in text, text[-2000:]
        if kind == "http":
            # The listing gives each name as its bytes: that file only is left out, said once.
            assert announced == ["good.txt", "old/ok.txt"]
            assert text.count("its name is not UTF-8, as notices need") == 1, text[-2000:]
        else:
            # The client reads names as UTF-8: that directory is left as it was, said at each poll.
            assert announced == ["good.txt"]
            assert "old/: a name there is not UTF-8 (b'" in text, text[-2000:]
    finally:
        recorder.close()
