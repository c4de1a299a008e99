"""on_file: a command that hangs is killed with what it started and the flow goes on; the
broker connection lives through a long command; and the command runs at least once, after
a crash, a stop, or a failure with on_file_failure retry."""
import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from dd.core import paths
from dd.delivery import hooks
from dd.store import pidfile, retry
from dd.core.notice import Checksum, Notice, Op, now
from dd.delivery.receive import Receiver
from dd.transfer import Transports
from tests.support.brokers import queue_counts
from tests.support.pump import wait_for


def script(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def lines(path):
    return path.read_text().splitlines() if path.exists() else []


def pids(path):
    return [int(line.split()[0]) for line in lines(path)]


def end_groups(runs):
    """Kill what the commands recorded in `runs` left running (each leads a group of its own)."""
    for pid in pids(runs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


#: A command that starts a child deaf to SIGTERM, records both pids, and hangs.
HANGS = """echo "$$ $1" >> {runs}
case "$DD_REL_PATH" in hang*)
    (trap '' TERM; exec sleep 300 </dev/null >/dev/null 2>&1) &
    echo "$! child" >> {runs}
    exec sleep 300 </dev/null >/dev/null 2>&1 ;;
esac
"""


def a_notice(rel_path="obs/a.txt"):
    return Notice(pubtime=now(), base_url="http://source.example/", rel_path=rel_path, op=Op.WRITE,
                  size=1, checksum=Checksum("sha256", "ab" * 32))


def test_a_command_past_its_timeout_is_killed_with_a_child_deaf_to_sigterm_while_the_broker_is_served(
        tmp_path):
    runs = tmp_path / "runs"
    ticks = []
    hook = hooks.Hook(str(script(tmp_path, "hook", HANGS.format(runs=runs))), timeout=1,
                      tick=lambda: ticks.append(time.monotonic()))
    started = time.monotonic()
    try:
        with pytest.raises(hooks.HookFailed) as failed:
            hook.run(str(tmp_path / "hang.txt"), a_notice("hang.txt"))
        took = time.monotonic() - started
        leader, child = pids(runs)
        assert not alive(leader) and not alive(child)
    finally:
        end_groups(runs)
    # SIGTERM after 1 s ends the command; its child outlives it until SIGKILL, KILL_GRACE later.
    assert 1 + hooks.KILL_GRACE <= took < 1 + hooks.KILL_GRACE + 3
    assert str(failed.value) == (f"on_file {hook.command} for {tmp_path / 'hang.txt'} still ran after "
                                 "on_file_timeout (1s) and was killed with every process it started "
                                 "(make it finish sooner, or raise on_file_timeout)")
    gaps = [b - a for a, b in zip([started, *ticks], ticks + [started + took])]
    assert max(gaps) < 1.0, "the broker connection went unserved for a second"


def test_a_stop_ends_the_command_at_once_and_says_it_did_not_complete(tmp_path):
    stop = threading.Event()
    hook = hooks.Hook(str(script(tmp_path, "hook", "exec sleep 300\n")), timeout=60, stop=stop)
    threading.Timer(0.3, stop.set).start()
    started = time.monotonic()
    with pytest.raises(hooks.HookStopped, match="was ended: dd is stopping"):
        hook.run(str(tmp_path / "a.txt"), a_notice())
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("body, message", [
    ("exit 3\n", "exited 3 for"),
    ("kill -9 $$\n", "was killed by SIGKILL for"),
])
def test_a_failing_command_is_one_line_naming_it_and_the_file(tmp_path, body, message):
    hook = hooks.Hook(str(script(tmp_path, "hook", body)), timeout=10)
    with pytest.raises(hooks.HookFailed) as failed:
        hook.run(str(tmp_path / "a.txt"), a_notice())
    assert f"on_file {hook.command} {message} {tmp_path / 'a.txt'}" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_a_command_that_cannot_run_is_a_failure_not_a_crash(tmp_path):
    hook = hooks.Hook(str(tmp_path / "missing"), timeout=10)
    with pytest.raises(hooks.HookFailed, match="cannot run for .*No such file or directory"):
        hook.run(str(tmp_path / "a.txt"), a_notice())


def alive(pid):
    identity = pidfile.identify(pid)
    return identity is not None and identity.alive()


@pytest.fixture
def other_process():
    """A process that runs, and one that ran (as their identities)."""
    running = subprocess.Popen(["sleep", "300"])
    ended = subprocess.Popen(["sleep", "300"])
    ended_id = str(pidfile.identify(ended.pid))
    ended.kill()
    ended.wait()
    yield str(pidfile.identify(running.pid)), ended_id
    running.kill()
    running.wait()


def test_a_record_of_a_process_gone_is_owed_one_of_a_process_running_is_not(tmp_path, other_process):
    running, gone = other_process
    path = tmp_path / "on_file.db"
    key = ("/data/a.txt", "sha256:ab")
    hooks.DueStore(path, 3600, owner=gone).mark(*key)
    hooks.DueStore(path, 3600, owner=running).mark("/data/b.txt", "sha256:cd")
    mine = hooks.DueStore(path, 3600)
    assert mine.mark(*key) is True                       # a crash left it: owed
    assert mine.mark("/data/b.txt", "sha256:cd") is False  # in the running process's hands
    mine.drop("/data/b.txt", "sha256:cd")
    assert mine.mark("/data/c.txt", "sha256:ef") is False
    assert mine.mark("/data/c.txt", "sha256:ef") is True    # marked before, not done: owed
    mine.done(*key)
    mine.done("/data/c.txt", "sha256:ef")
    assert len(mine) == 1                                # the running process's record is its own


@pytest.mark.skipif(not shutil.which("chattr"), reason="chattr (e2fsprogs) is not installed")
def test_a_record_that_cannot_be_written_fails_the_notice_before_anything_is_received(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.txt").write_text("a")
    notice = Notice(pubtime=now(), base_url=f"file://{tmp_path / 'src'}/", rel_path="a.txt", size=1,
                    checksum=Checksum("sha256", hashlib.sha256(b"a").hexdigest()))
    due = hooks.DueStore(tmp_path / "state" / "on_file.db", 3600)
    receiver = hooks.Hooked(Receiver(Transports()), hooks.Hook("true"), due)
    wal = tmp_path / "state" / "on_file.db-wal"
    # Immutable: even root cannot write it, as a broken disk would refuse.
    if subprocess.run(["chattr", "+i", str(wal)], check=False, capture_output=True).returncode:
        pytest.skip("this filesystem has no immutable files")
    try:
        outcome = receiver.receive(notice, paths.Tree(tmp_path / "dst"), "a.txt")
    finally:
        subprocess.run(["chattr", "-i", str(wal)], check=True)
    assert (outcome.code, outcome.rule) == (500, "filesystem")
    assert outcome.message.startswith(f"cannot record that on_file is due in {due.path}: ")
    assert not (tmp_path / "dst" / "a.txt").exists()


def test_records_older_than_the_ttl_go(tmp_path):
    path = tmp_path / "on_file.db"
    hooks.DueStore(path, 60).mark("/data/a.txt", "sha256:ab", now=time.time() - 61)
    hooks.DueStore(path, 60).mark("/data/b.txt", "sha256:cd")
    assert len(hooks.DueStore(path, 60)) == 1


# -- dd_subscribe, against the real broker and nginx ------------------------------------


def due_records(pump, name="sub"):
    return len(hooks.DueStore(pump.base / "state" / pump.component / name / "on_file.db", 3600))


def test_a_hanging_command_is_killed_with_its_child_and_the_next_file_is_delivered(pump):
    runs = pump.base / "runs"
    hook = script(pump.base, "hook", HANGS.format(runs=runs))
    for name in ("hang.txt", "next.txt"):
        (pump.src / name).write_text(name)
    pump.subscriber_config(extra=f"on_file {hook}\non_file_timeout 2s")
    pump.post(pump.src / "hang.txt")
    pump.post(pump.src / "next.txt")
    subscriber = pump.foreground()
    try:
        assert wait_for(lambda: len(lines(runs)) == 3, timeout=60)
        leader, child = pids(runs)[:2]
        assert wait_for(lambda: pump.queue_depth() == 0)
        _, log = pump.stop(subscriber)
    finally:
        end_groups(runs)
    assert not alive(leader) and not alive(child)
    assert lines(runs)[2] == f"{pids(runs)[2]} {pump.dst / 'next.txt'}"
    killed = [line for line in log.splitlines() if "on_file_timeout" in line]
    assert len(killed) == 1, log
    assert f"on_file {hook} for {pump.dst / 'hang.txt'} still ran after on_file_timeout (2s)" in killed[0]
    assert killed[0].endswith("(make it finish sooner, or raise on_file_timeout)")
    assert log.count("201 delivered") == 2           # on_file_failure log: the delivery stands
    assert due_records(pump) == 0


def test_the_broker_connection_lives_through_a_command_that_takes_several_heartbeats(pump, vhost):
    runs = pump.base / "runs"
    hook = script(pump.base, "hook", f'echo "$$ $1" >> {runs}\nsleep 8\n')
    for name in ("a.txt", "b.txt"):
        (pump.src / name).write_text(name)
    # One thread: both commands run on the thread that serves the broker, 16 s in all, over
    # five heartbeats of 3 s (2 s is too close to the broker's own timing on a busy machine).
    # log_reports off: this is about the connection notices come on.
    pump.subscriber_config(extra=f"on_file {hook}\nheartbeat 3s\nthreads 1\nlog_reports off")
    pump.post(pump.src)
    subscriber = pump.foreground()
    queue = (pump.base / "state" / "subscribe" / "sub" / "queue").read_text().strip()
    assert wait_for(lambda: len(lines(runs)) == 2 and queue_counts(vhost, queue) == (0, 0), timeout=60)
    time.sleep(2)   # a notice delivered again would come back now
    _, log = pump.stop(subscriber)
    assert sorted(line.split()[1] for line in lines(runs)) == [str(pump.dst / n) for n in ("a.txt", "b.txt")]
    assert "lost the broker connection" not in log
    assert "could not ack" not in log
    assert log.count("201 delivered") == 2 and "304" not in log


def test_a_command_cut_short_by_sigkill_runs_again_when_the_notice_comes_back(pump):
    runs = pump.base / "runs"
    # The first run writes its line, then waits: dd is killed meanwhile.
    hook = script(pump.base, "hook", f'echo "$$ $1" >> {runs}\n'
                                     f'[ $(wc -l < {runs}) -gt 1 ] || exec sleep 300 >/dev/null 2>&1\n')
    (pump.src / "a.txt").write_text("a")
    pump.subscriber_config(extra=f"on_file {hook}")
    pump.post(pump.src / "a.txt")
    first = pump.foreground()
    try:
        assert wait_for(lambda: len(lines(runs)) == 1)
        first.kill()
        first.communicate()
        assert (pump.dst / "a.txt").read_text() == "a"    # in place before the command ran
        assert due_records(pump) == 1
        again = pump.foreground()
        assert wait_for(lambda: len(lines(runs)) == 2 and pump.queue_depth() == 0)
        _, log = pump.stop(again)
    finally:
        end_groups(runs)
    assert [line.split()[1] for line in lines(runs)] == [str(pump.dst / "a.txt")] * 2
    assert "201 in place; on_file had not completed, ran now" in log
    assert due_records(pump) == 0


def test_a_stop_ends_the_command_and_it_runs_again_after_the_restart(pump):
    runs = pump.base / "runs"
    hook = script(pump.base, "hook", f'echo "$$ $1" >> {runs}\n'
                                     f'[ $(wc -l < {runs}) -gt 1 ] || exec sleep 300\n')
    (pump.src / "a.txt").write_text("a")
    pump.subscriber_config(extra=f"on_file {hook}\nretry_delay 1s")
    pump.post(pump.src / "a.txt")
    first = pump.foreground()
    assert wait_for(lambda: len(lines(runs)) == 1)
    started = time.monotonic()
    status, log = pump.stop(first)
    assert status == 0 and time.monotonic() - started < 5
    assert not alive(pids(runs)[0])
    assert f"500 on_file {hook} for {pump.dst / 'a.txt'} was ended: dd is stopping" in log
    assert "kept for retry [on_file]" in log
    again = pump.foreground()
    assert wait_for(lambda: len(lines(runs)) == 2)
    _, log = pump.stop(again)
    assert "201 in place; on_file had not completed, ran now" in log
    assert due_records(pump) == 0


def test_with_on_file_failure_retry_a_failed_command_keeps_the_notice_and_runs_again(pump):
    runs = pump.base / "runs"
    hook = script(pump.base, "hook", f'echo "$$ $1" >> {runs}\n[ $(wc -l < {runs}) -gt 1 ] || exit 3\n')
    (pump.src / "a.txt").write_text("a")
    pump.subscriber_config(extra=f"on_file {hook}\non_file_failure retry\nretry_delay 3s")
    pump.post(pump.src / "a.txt")
    store = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"
    subscriber = pump.foreground()
    assert wait_for(lambda: len(lines(runs)) == 1)
    # Acknowledged to the broker, kept in the retry store, and not yet run again.
    assert wait_for(lambda: store.exists() and retry.waiting(store) == 1 and pump.queue_depth() == 0)
    assert len(lines(runs)) == 1
    assert wait_for(lambda: len(lines(runs)) == 2 and retry.waiting(store) == 0, timeout=30)
    _, log = pump.stop(subscriber)
    assert (f"500 on_file {hook} exited 3 for {pump.dst / 'a.txt'} (its own messages, on its standard "
            "error, are in this log); kept for retry [on_file]") in log
    assert "201 in place; on_file had not completed, ran now" in log
    assert due_records(pump) == 0
