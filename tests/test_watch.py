"""dd_watch → RabbitMQ → nginx → dd_subscribe, with real processes: the subscriber's tree
ends identical to the watched one, and no notice ever described a half-written file."""
import hashlib
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest
from watchdog import version as watchdog_version

from dd.source import watching
from dd.core.notice import Op
from tests.support.daemons import Daemon, Recorder
from tests.support.pump import compare, manifest, wait_for


class Watcher(Daemon):
    """dd_watch on the pump's source tree."""

    def __init__(self, pump, extra=""):
        super().__init__(pump, "watch", "w")
        config = pump.base / "config" / "watch" / "w.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"post_broker {pump.broker_url}\npost_exchange {pump.exchange}\n"
                          f"post_base_url {pump.base_url}\npost_base_dir {pump.src}\npath {pump.src}\n"
                          f"checksum sha256\n{extra}\n")

    def start(self):
        super().start()
        assert wait_for(lambda: "change(s) since the last run" in self.text(), timeout=20), self.text()
        return self


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def write_slowly(path, chunks, pause):
    with open(path, "wb") as f:
        for chunk in chunks:
            f.write(chunk)
            f.flush()
            time.sleep(pause)


def links(root):
    return {str(p.relative_to(root)): os.readlink(p) for p in root.rglob("*") if p.is_symlink()}


@pytest.fixture
def watched(pump):
    pump.subscriber_config()
    recorder = Recorder(pump)
    watcher = Watcher(pump)
    yield pump, recorder, watcher
    recorder.close()


def check_notices(notices, versions):
    """Every content notice names a complete version of its file: none was half-written."""
    for notice in notices:
        if notice.op in (Op.WRITE, Op.RENAME):
            name = notice.rename_from if notice.op is Op.RENAME else notice.rel_path
            complete = versions.get(notice.rel_path, set()) | versions.get(name, set())
            assert (notice.size, notice.checksum.value) in complete, f"{notice.op.value} {notice.rel_path}"


def test_a_thousand_files_written_renamed_deleted_arrive_whole(watched):
    pump, recorder, watcher = watched
    rng = random.Random(11)
    versions = {}      # rel_path -> {(size, sha256)} of every complete content it had

    def put(rel_path, data, slow=False):
        path = pump.src / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        versions.setdefault(rel_path, set()).add((len(data), sha256(data)))
        if slow:
            write_slowly(path, [data[i:i + 3000] for i in range(0, len(data), 3000)], pause=0.3)
        else:
            path.write_bytes(data)

    for i in range(100):                                    # there before the watch starts
        put(f"old/{i:03d}.dat", rng.randbytes(rng.choice([0, 10, 5000])))
    subscriber = Daemon(pump, "subscribe", "sub").start()
    watcher.start()
    notices = []
    assert wait_for(lambda: notices.extend(recorder.drain()) or len(notices) >= 100)

    # 50 files in 4 writes with pauses, begun while the watcher is idle: their creation
    # is seen long before they are complete.
    slow = [threading.Thread(target=put, args=(f"slow/{i:02d}.bin", rng.randbytes(12000), True))
            for i in range(50)]
    for thread in slow:
        thread.start()
    for d in range(20):                                     # 680 files in new directories
        for i in range(34):
            put(f"new{d:02d}/sub/{i:02d}.bin", rng.randbytes(rng.choice([1, 700, 20000])))
    for i in range(150):                                    # written under a temporary name
        data = rng.randbytes(rng.choice([3, 9000]))
        tmp = pump.src / "tmp" / (f".{i:03d}.part" if i % 2 else f"{i:03d}.dat.tmp")
        tmp.parent.mkdir(exist_ok=True)
        tmp.write_bytes(data)
        versions.setdefault(f"tmp/{i:03d}.dat", set()).add((len(data), sha256(data)))
        os.rename(tmp, pump.src / "tmp" / f"{i:03d}.dat")
    for i in range(0, 100, 2):                              # renamed, deleted, rewritten
        os.rename(pump.src / f"old/{i:03d}.dat", pump.src / f"old/renamed{i:03d}.dat")
        versions[f"old/renamed{i:03d}.dat"] = versions[f"old/{i:03d}.dat"]
    for i in range(1, 100, 4):
        (pump.src / f"old/{i:03d}.dat").unlink()
    for i in range(3, 100, 4):
        put(f"old/{i:03d}.dat", b"rewritten %d" % i)
    for i in range(20):                                     # deleted soon after being written
        put(f"gone/{i}.bin", b"short-lived")
        (pump.src / f"gone/{i}.bin").unlink()
    os.symlink("renamed000.dat", pump.src / "old" / "alias")
    os.link(pump.src / "tmp" / "000.dat", pump.src / "tmp" / "hardlink.dat")
    versions["tmp/hardlink.dat"] = versions["tmp/000.dat"]
    for thread in slow:
        thread.join()

    expected = manifest(pump.src)
    assert len(expected) == 100 - 25 + 680 + 50 + 150 + 1
    arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], [])
                       and links(pump.dst) == links(pump.src), timeout=60)
    watcher.stop()
    subscriber.stop()
    log = subscriber.text()
    lost, invented, changed = compare(expected, manifest(pump.dst))
    assert (len(lost), len(invented), changed) == (0, 0, []), (lost[:5], invented[:5], log[-2000:])
    assert arrived and links(pump.dst) == {"old/alias": "renamed000.dat"}
    notices += recorder.drain()
    check_notices(notices, versions)
    assert not [n for n in notices if "tmp" in n.rel_path and n.rel_path.endswith((".tmp", ".part"))]
    # Renamed after they were announced: the subscriber moves its copy.
    assert sorted(n.rel_path for n in notices if n.op is Op.RENAME) == [
        f"old/renamed{i:03d}.dat" for i in range(0, 100, 2)]
    assert "Traceback" not in watcher.text() + log
    assert "[ERROR]" not in watcher.text()


def test_a_restart_announces_what_changed_while_it_was_down_and_nothing_else(watched):
    pump, recorder, watcher = watched
    for i in range(50):
        (pump.src / "d").mkdir(exist_ok=True)
        (pump.src / "d" / f"{i}.txt").write_text(f"first {i}")
    watcher.start()
    first = []
    assert wait_for(lambda: first.extend(recorder.drain()) or len(first) >= 50, timeout=30)
    watcher.stop()
    assert len(first) == 50

    (pump.src / "d" / "0.txt").write_text("changed while down")
    (pump.src / "d" / "1.txt").unlink()
    os.rename(pump.src / "d" / "2.txt", pump.src / "d" / "two.txt")
    (pump.src / "d" / "new.txt").write_text("new while down")
    subscriber = Daemon(pump, "subscribe", "sub").start()
    watcher.start()
    expected = manifest(pump.src)
    arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=30)
    watcher.stop()
    subscriber.stop()
    assert arrived
    second = recorder.drain()
    # 0.txt changed, new.txt and two.txt new, 1.txt and 2.txt gone: nothing else is announced again.
    assert sorted((n.op.value, n.rel_path) for n in second) == [
        ("delete", "d/1.txt"), ("delete", "d/2.txt"), ("write", "d/0.txt"), ("write", "d/new.txt"),
        ("write", "d/two.txt")]


def test_temporary_names_are_posted_when_an_accept_line_names_them(watched):
    pump, recorder, _ = watched
    watcher = Watcher(pump, extra="accept .*\\.tmp\naccept .*\\.txt")
    watcher.start()
    for name in ("a.tmp", ".hidden", "b.txt", "c.dat", "last.txt"):
        (pump.src / name).write_text(name)
    names = []
    # Events are handled in order: once last.txt is announced, the others were decided.
    assert wait_for(lambda: names.extend(n.rel_path for n in recorder.drain()) or "last.txt" in names)
    watcher.stop()
    assert sorted(names) == ["a.tmp", "b.txt", "last.txt"]


def test_a_file_whose_name_is_not_utf8_is_named_in_the_log_and_the_others_announced(watched):
    pump, recorder, watcher = watched
    (pump.src / os.fsdecode(b"before caf\xe9.txt")).write_text("there at the start")
    watcher.start()
    (pump.src / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1")
    (pump.src / "last.txt").write_text("utf-8")
    notices = []
    assert wait_for(lambda: notices.extend(recorder.drain()) or notices)
    # Renamed to such a name: the old name is gone downstream too.
    os.rename(pump.src / "last.txt", pump.src / os.fsdecode(b"l\xe0st.txt"))
    assert wait_for(lambda: notices.extend(recorder.drain()) or len(notices) >= 2)
    watcher.stop()
    assert [(n.op, n.rel_path) for n in notices] == [(Op.WRITE, "last.txt"), (Op.DELETE, "last.txt")]
    text = watcher.text()
    # Each named, its bytes escaped, in the log file as in this one.
    for name in ("before caf\\udce9.txt", "/caf\\udce9.txt", "/l\\udce0st.txt"):
        assert f"{name}: its name is not UTF-8, as notices need" in text, text[-2000:]
    assert "Traceback" not in text and "Logging error" not in text


def test_a_missing_watched_directory_is_a_one_line_config_error(pump):
    config = pump.base / "config" / "watch" / "bad.conf"
    config.parent.mkdir(parents=True)
    config.write_text(f"post_broker {pump.broker_url}\npost_base_url {pump.base_url}\n"
                      f"post_base_dir {pump.src}\npath {pump.src / 'nowhere'}\n")
    result = pump.command("watch", "foreground", "bad", timeout=30)
    assert result.returncode == 2
    assert f"path {pump.src / 'nowhere'} is not a directory" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text(f"post_broker {pump.broker_url}\npost_base_url {pump.base_url}\npost_base_dir {pump.src}\n"
                      f"path {pump.base}\n")
    result = pump.command("watch", "foreground", "bad", timeout=30)
    assert result.returncode == 2 and f"path {pump.base} is not below post_base_dir {pump.src}" in result.stderr
    config.write_text(f"post_broker {pump.broker_url}\npost_base_url {pump.base_url}\npost_base_dir {pump.src}\n")
    result = pump.command("watch", "foreground", "bad", timeout=30)
    assert result.returncode == 2 and "dd_watch needs path" in result.stderr


def test_too_few_inotify_watches_is_an_error_naming_the_limit_and_how_to_raise_it(pump):
    """In a user namespace of its own, whose user.max_inotify_watches is below what the tree
    needs (watchdog 7 would leave the rest unwatched without a word)."""
    if subprocess.run(["unshare", "-U", "-r", "true"], capture_output=True).returncode:
        pytest.skip("unshare -U (a user namespace) is not allowed here")
    for n in range(30):
        (pump.src / f"d{n}" / "sub").mkdir(parents=True)
    config = pump.base / "config" / "watch" / "w.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"post_broker {pump.broker_url}\npost_exchange {pump.exchange}\n"
                      f"post_base_url {pump.base_url}\npost_base_dir {pump.src}\npath {pump.src}\n")
    command = [sys.executable, "-m", "dd.cli.main", "watch", "foreground", "w"]

    def watch_with(limit):
        return subprocess.run(["unshare", "-U", "-r", "sh", "-c",
                               f'echo {limit} > /proc/sys/user/max_inotify_watches && exec "$@"', "sh", *command],
                              env=pump.env, capture_output=True, text=True, timeout=60)
    result = watch_with(20)
    assert result.returncode != 0
    assert (f"cannot watch all of {pump.src}: its 61 directories need as many inotify watches, "
            f"and user.max_inotify_watches is 20") in result.stderr
    assert "sysctl -w user.max_inotify_watches=65536" in result.stderr
    assert "Traceback" not in result.stderr
    log = pump.base / "enough.log"
    with open(log, "w") as out, subprocess.Popen(
            ["unshare", "-U", "-r", "sh", "-c", 'echo 100 > /proc/sys/user/max_inotify_watches && exec "$@"',
             "sh", *command], env=pump.env, stdout=out, stderr=out) as enough:
        try:
            assert wait_for(lambda: "change(s) since the last run" in log.read_text(), timeout=30), log.read_text()
        finally:
            enough.terminate()


def test_cleanup_forgets_what_was_announced_and_declare_has_nothing_to_do(watched):
    pump, recorder, watcher = watched
    (pump.src / "a.txt").write_text("a")
    watcher.start()
    assert wait_for(lambda: recorder.drain() or False)
    watcher.stop()
    assert (pump.base / "state" / "watch" / "w" / "announced.json").exists()
    declared = pump.command("watch", "declare", "w")
    assert declared.returncode == 0 and "no queue to declare" in declared.stdout
    cleaned = pump.command("watch", "cleanup", "w")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not (pump.base / "state" / "watch" / "w" / "announced.json").exists()


@pytest.mark.skipif(watchdog_version.VERSION_MAJOR >= 7, reason="watchdog 7 reports overflows itself")
def test_an_overflow_that_old_watchdog_skips_is_spotted(monkeypatch):
    from watchdog.observers import inotify_c
    # Put back after the test, as it was (a staticmethod).
    monkeypatch.setattr(inotify_c.Inotify, "_parse_event_buffer", inotify_c.Inotify.__dict__["_parse_event_buffer"])
    collector = watching._Collector()
    watching._spot_dropped_overflows(collector)
    name = b"f1".ljust(16, b"\0")
    created = struct.pack("iIII", 1, inotify_c.InotifyConstants.IN_CREATE, 0, len(name)) + name
    overflow = struct.pack("iIII", -1, inotify_c.InotifyConstants.IN_Q_OVERFLOW, 0, 0)
    parsed = list(inotify_c.Inotify._parse_event_buffer(created + overflow))
    assert [(wd, name) for wd, _, _, name in parsed] == [(1, b"f1"), (-1, b"")]   # watchdog's to skip
    assert collector.take(0) == [(watching.OVERFLOW, None, None)]


# Debian 12's watchdog 2.2 passed it in one CI run and not in the next (the overflow never
# came within 30 s, cause not found): the shim it needs is tested above on its own.
@pytest.mark.skipif(watchdog_version.VERSION_MAJOR < 7, reason="the kernel's own overflow: watchdog 7 and later")
def test_an_inotify_queue_overflow_asks_for_a_rescan(tmp_path):
    limit = int(open("/proc/sys/fs/inotify/max_queued_events").read())
    if limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it here")
    changes = watching.Changes([tmp_path])
    changes.start()
    try:
        # The helper stands still while more events than the kernel keeps for it happen.
        os.kill(changes.helper_pid, signal.SIGSTOP)
        try:
            # A create and a close each: twice what the kernel keeps, so that it overflows
            # even if the helper read a batch before it stood still (once, in CI, it did not).
            for i in range(limit + 100):
                (tmp_path / f"f{i}").touch()
        finally:
            os.kill(changes.helper_pid, signal.SIGCONT)
        # The overflow comes last, after what the kernel kept (watchdog before 7 makes tens of
        # thousands of events of it): each batch is looked at once, not everything seen again.
        overflowed, seen, deadline = False, 0, time.monotonic() + 60
        while not overflowed and time.monotonic() < deadline:
            batch = changes.take(1, 0)
            overflowed, seen = (watching.OVERFLOW, None, None) in batch, seen + len(batch)
        assert overflowed, f"no overflow among {seen} events; watching ended: {changes.why_not}"
    finally:
        changes.stop()


def running(pid):
    """Whether `pid` is a live process (not a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_helper_reading_events_ends_with_its_parent_even_a_killed_one(tmp_path):
    parent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from dd.source import watching; c = watching.Changes([sys.argv[1]]); "
         "c.start(); print(c.helper_pid, flush=True); time.sleep(600)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        helper = int(parent.stdout.readline())
        assert running(helper)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not running(helper), timeout=10)
    finally:
        parent.kill()
        parent.wait()


def test_a_file_renamed_while_still_open_for_writing_is_announced_once_closed(watched):
    pump, recorder, watcher = watched
    watcher.start()
    notices = []

    def announced(name):
        notices.extend(recorder.drain())
        return any(n.rel_path == name for n in notices)

    with open(pump.src / "x.tmp", "wb") as f:
        f.write(b"a" * 1000)
        f.flush()
        os.rename(pump.src / "x.tmp", pump.src / "x.dat")
        # Events are handled in order: once this one is announced, the rename was decided.
        (pump.src / "sentinel.txt").write_text("s")
        assert wait_for(lambda: announced("sentinel.txt"))
        f.write(b"b" * 1000)
    assert wait_for(lambda: announced("x.dat"))
    watcher.stop()
    notices.extend(recorder.drain())
    assert [(n.op, n.size) for n in notices if n.rel_path == "x.dat"] == [(Op.WRITE, 2000)]


def test_removing_the_watched_directory_ends_dd_watch_after_announcing_the_deletions(watched):
    pump, recorder, watcher = watched
    (pump.src / "a.txt").write_text("a")
    watcher.start()
    notices = []
    assert wait_for(lambda: notices.extend(recorder.drain()) or notices)
    shutil.rmtree(pump.src)
    assert watcher.process.wait(timeout=15) == 1
    notices += recorder.drain()
    assert [(n.op, n.rel_path) for n in notices] == [(Op.WRITE, "a.txt"), (Op.DELETE, "a.txt")]
    assert f"no longer watching {pump.src}" in watcher.text() and "Traceback" not in watcher.text()


def test_a_name_renamed_then_deleted_or_rewritten_at_once_takes_its_old_name_away(watched):
    # The rename and what follows come in one burst: the old names must be announced gone,
    # or subscribers keep them forever.
    pump, recorder, watcher = watched
    watcher.start()
    (pump.src / "a.txt").write_text("a")
    (pump.src / "c.txt").write_text("c")
    notices = []

    def announced(name):
        notices.extend(recorder.drain())
        return any(n.rel_path == name for n in notices)
    assert wait_for(lambda: announced("a.txt") and announced("c.txt"))
    os.rename(pump.src / "a.txt", pump.src / "b.txt")
    os.unlink(pump.src / "b.txt")
    os.rename(pump.src / "c.txt", pump.src / "d.txt")
    (pump.src / "d.txt").write_text("d, written again")
    (pump.src / "sentinel.txt").write_text("s")
    assert wait_for(lambda: announced("sentinel.txt") and announced("d.txt"))
    watcher.stop()
    notices.extend(recorder.drain())
    said = {(n.op, n.rel_path) for n in notices}
    assert (Op.DELETE, "a.txt") in said and (Op.DELETE, "c.txt") in said, sorted(said)
    assert [(n.op, n.size) for n in notices if n.rel_path == "d.txt"] == [(Op.WRITE, 16)]
    assert not any(n.rel_path == "b.txt" for n in notices)
