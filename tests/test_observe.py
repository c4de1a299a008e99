"""What a user and a log stack see of a running flow: JSON log lines, refusals said once per
rule, each dd_post error said once, a broker's refusal that names the likely cause."""
import fcntl
import json
import logging
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import urllib.parse

import pytest

from dd.admin import logs
from dd.store import metrics
from tests.support.pump import wait_for
from tests.support.servers import free_port


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_the_console_finds_the_errors_of_a_log_in_either_format():
    def line(formatter, level, message):
        return formatter.format(logging.LogRecord("dd.flow", level, __file__, 1, message, (), None))
    for formatter in (logs.JsonFormatter("subscribe", "sub", 1), logging.Formatter(logs.FORMAT)):
        assert logs.is_error(line(formatter, logging.ERROR, "no space left on /data"))
        assert logs.is_error(line(formatter, logging.CRITICAL, "cannot run"))
        # A message that only quotes a level is not one.
        assert not logs.is_error(line(formatter, logging.INFO, 'a file named "[ERROR]" or "level": "error"'))


def test_log_format_json_gives_one_object_a_line_with_the_fields(pump):
    pump.subscriber_config("sub", extra=f"log_format json\ndirectory {pump.dst}\nreject .*\\.tmp\naccept .*")
    process = pump.foreground("sub")
    (pump.src / "kept.txt").write_text("kept")
    (pump.src / "a.tmp").write_text("a")
    (pump.src / "b.tmp").write_text("b")
    pump.post(pump.src)
    assert wait_for(lambda: (pump.dst / "kept.txt").exists())
    status, err = pump.stop(process)
    assert status == 0, err
    lines = _json_lines(err)       # every line parses, or this raises
    assert lines
    for line in lines:
        assert {"time", "level", "component", "configuration", "instance", "message"} <= set(line), line
        assert (line["component"], line["configuration"], line["instance"]) == ("subscribe", "sub", 1)
        assert line["time"].endswith("+00:00") and line["level"] in ("info", "warning", "error")
    delivered = [line for line in lines if line.get("rel_path") == "kept.txt"]
    assert delivered and "delivered" in delivered[0]["message"]
    # A reject line's first refusal is said at info with its rule; the next ones only at debug.
    refused = [line for line in lines if line["message"].startswith("not accepted")]
    assert len(refused) == 1, refused
    assert refused[0]["level"] == "info" and refused[0]["rel_path"].endswith(".tmp")
    assert "reject .*\\.tmp (" in refused[0]["message"]


def test_a_rule_refusing_notices_is_said_once_at_info(pump):
    pump.subscriber_config("sub", extra=f"directory {pump.dst}\naccept .*\\.txt")
    process = pump.foreground("sub")
    for name in ("one.txt", "x.dat", "y.dat", "z.dat"):
        (pump.src / name).write_text(name)
    pump.post(pump.src)
    assert wait_for(lambda: (pump.dst / "one.txt").exists())
    _, err = pump.stop(process)
    refused = [line for line in err.splitlines() if "not accepted" in line]
    assert len(refused) == 1 and "[INFO]" in refused[0], err
    assert "no accept line matches it and accept_unmatched is off" in refused[0]


def test_dd_post_says_each_error_once(pump):
    (pump.src / "here.txt").write_text("here")
    result = pump.post(pump.src / "here.txt", pump.src / "missing.txt", check=False)
    assert result.returncode == 1
    assert result.stderr.count("missing.txt") == 1, result.stderr
    assert "1 announced, 1 not announced" in result.stderr


@pytest.mark.broker
def test_a_virtual_host_refused_may_also_not_exist(pump):
    scheme, netloc = urllib.parse.urlsplit(pump.broker_url)[:2]
    url = f"{scheme}://{netloc}/dd-no-such-vhost"
    (pump.src / "one.txt").write_text("one")
    result = pump.command("post", f"--post_broker={url}", f"--post_exchange={pump.exchange}",
                          f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}", pump.src)
    assert result.returncode != 0
    assert "may not use virtual host 'dd-no-such-vhost', or it does not exist" in result.stderr, result.stderr
    assert result.stderr.count("may not use virtual host") == 1 and "Traceback" not in result.stderr


# -- a subscriber seen while it works ---------------------------------------------------------

BIG = 24 << 20          # at SLOW bytes/s: a transfer of about 12 s
SLOW = "2M"


def _big_file(pump, name="big.bin"):
    path = pump.src / name
    with open(path, "wb") as f:
        f.write(os.urandom(BIG))
    return path


def _slow_subscriber(pump, extra="", rate=SLOW):
    return pump.subscriber_config("sub", extra=f"rate_max {rate}\n{extra}")


def _ctl_json(pump, configuration="subscribe/sub"):
    result = subprocess.run([sys.executable, "-m", "dd.cli.main", "ctl", "status", "--json", configuration],
                            env=pump.env, capture_output=True, text=True, timeout=60)
    return json.loads(result.stdout)["configurations"][0]


def test_foreground_refuses_an_instance_that_runs_in_the_background(pump):
    pump.subscriber_config("sub")
    assert pump.command("subscribe", "start", "sub").returncode == 0
    try:
        state = pump.base / "state" / "subscribe" / "sub"
        before = (state / "i001.pid").read_text()
        result = pump.command("subscribe", "foreground", "sub", timeout=60)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert "dd_subscribe sub instance 1 already runs (pid " in result.stderr
        assert "dd_ctl foreground subscribe/sub --instance 2" in result.stderr
        assert (state / "i001.pid").read_text() == before     # its pid file untouched
        status = pump.command("subscribe", "status", "sub")
        assert status.returncode == 0 and "running (1/1 instances)" in status.stdout
    finally:
        assert "stopped 1 instance(s)" in pump.command("subscribe", "stop", "sub").stdout


def test_status_shows_a_long_transfer_in_flight_and_its_activity_stays_fresh(pump):
    _slow_subscriber(pump, rate="1M")           # about 24 s
    _big_file(pump)
    assert pump.command("subscribe", "start", "sub").returncode == 0
    try:
        pump.post(pump.src / "big.bin")
        assert wait_for(lambda: _ctl_json(pump)["in_flight"], timeout=30)
        first = _ctl_json(pump)["in_flight"][0]
        assert first["file"] == "big.bin" and first["total"] == BIG and 0 < first["done"] < BIG
        assert first["rate"] > 0 and first["eta"] > 0
        # Well past a metrics interval into the transfer, the activity is still recent.
        time.sleep(2 * metrics.INTERVAL)
        facts = _ctl_json(pump)
        assert facts["in_flight"] and facts["in_flight"][0]["done"] > first["done"]
        assert time.time() - facts["last_activity"] < metrics.INTERVAL + 2
        table = pump.command("ctl", "status", "subscribe/sub").stdout
        assert "subscribe/sub: in flight: big.bin (" in table and " of 24.0 MiB, " in table, table
        row = next(line for line in table.splitlines() if line.startswith("subscribe/sub "))
        assert "second" in row or "  now  " in row, table      # LAST ACTIVITY
        assert wait_for(lambda: (pump.dst / "big.bin").exists(), timeout=60)
        assert wait_for(lambda: not _ctl_json(pump)["in_flight"], timeout=3 * metrics.INTERVAL)
    finally:
        pump.command("subscribe", "stop", "sub")


def test_status_shows_a_long_send_in_flight(pump):
    destination = pump.base / "pushed"
    config = pump.base / "config" / "sender" / "push.conf"
    config.parent.mkdir(parents=True)
    config.write_text(f"broker {pump.broker_url}\nexchange {pump.exchange}\ndestination file:{destination}\n"
                      "rate_max 3M\n")                # about 8 s
    pump.command("sender", "declare", "push", check=True)
    _big_file(pump)
    assert pump.command("sender", "start", "push").returncode == 0
    try:
        pump.post(pump.src / "big.bin")
        assert wait_for(lambda: _ctl_json(pump, "sender/push")["in_flight"], timeout=30)
        first = _ctl_json(pump, "sender/push")["in_flight"][0]
        assert first["file"] == "big.bin" and first["total"] == BIG and 0 < first["done"] < BIG
        table = pump.command("ctl", "status", "sender/push").stdout
        assert "sender/push: in flight: big.bin (" in table, table
        assert wait_for(lambda: (destination / "big.bin").exists(), timeout=60)
        assert (destination / "big.bin").read_bytes() == (pump.src / "big.bin").read_bytes()
        assert wait_for(lambda: not _ctl_json(pump, "sender/push")["in_flight"], timeout=3 * metrics.INTERVAL)
    finally:
        pump.command("sender", "stop", "push")


def test_subscribe_status_shows_retries_the_last_error_and_the_queue_and_keeps_counters(pump):
    pump.subscriber_config("sub", extra="retry_delay 1h")
    (pump.src / "here.txt").write_text("here")
    (pump.src / "away.txt").write_text("away")
    pump.post(pump.src / "here.txt")
    # A server that is not there: worth retrying later.
    pump.post(pump.src / "away.txt", post_base_url=f"http://127.0.0.1:{free_port()}/")
    assert pump.command("subscribe", "start", "sub").returncode == 0
    try:
        assert wait_for(lambda: (pump.dst / "here.txt").exists())

        def status():
            return pump.command("subscribe", "status", "sub").stdout
        assert wait_for(lambda: "1 notices waiting for a retry" in status() and "last error" in status(),
                        timeout=3 * metrics.INTERVAL)
        out = status()
        assert "dd_subscribe sub: running (1/1 instances)" in out
        assert "1 files, 4 Bytes delivered; 1 errors in the last hour; queue q_" in out
        assert ": 0 notices waiting; 1 notices waiting for a retry" in out
        assert "last error " in out and "away.txt: " in out
        assert pump.command("subscribe", "restart", "sub").returncode == 0
        out = status()
        assert "1 files, 4 Bytes delivered; 1 errors in the last hour" in out, out
        assert "away.txt: " in out
    finally:
        pump.command("subscribe", "stop", "sub")


def _foreground_to(pump, stderr, stdin=None):
    process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "sub"],
                               env=pump.env, stdin=stdin, stdout=stderr, stderr=stderr)
    pump.processes.append(process)
    return process


def test_ctrl_c_says_what_it_waits_for_and_a_second_aborts_without_acknowledging(pump, tmp_path):
    _slow_subscriber(pump)
    _big_file(pump)
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        process = _foreground_to(pump, stderr)
    pump.post(pump.src / "big.bin")
    assert wait_for(lambda: _ctl_json(pump)["in_flight"], timeout=30)
    process.send_signal(signal.SIGINT)
    assert wait_for(lambda: "waiting for big.bin (" in log.read_text(), timeout=10), log.read_text()
    assert "press Ctrl-C again to abort" in log.read_text()
    assert process.poll() is None                   # still downloading
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=15) == 130, log.read_text()
    assert "Traceback" not in log.read_text()
    # Nothing under its final name, only the temporary file the next attempt resumes
    # (dd.delivery.resume), and the notice comes again.
    assert not (pump.dst / "big.bin").exists()
    assert not pump.dst.exists() or [p.name for p in pump.dst.iterdir()] in ([], [".big.bin.dd.tmp"])
    assert wait_for(lambda: pump.queue_depth("sub") == 1, timeout=10)
    assert not (pump.base / "state" / "subscribe" / "sub" / "i001.pid").exists()


def _run_on_a_pty(argv, env, until, timeout=60):
    """Run `argv` with its stdout and stderr on a terminal; what it wrote there, once
    `until(text)` is true or it ended."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a terminal's size
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=follower, stderr=follower)
    os.close(follower)
    seen, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not until(seen.decode(errors="replace")):
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:     # EIO: the process ended and closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
    finally:
        os.close(leader)
    return process, seen.decode(errors="replace")


def test_subscribe_foreground_shows_a_progress_bar_on_a_terminal_and_none_on_a_pipe(pump, tmp_path):
    _slow_subscriber(pump)
    _big_file(pump)
    pump.post(pump.src / "big.bin")
    argv = [sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "sub"]
    process, seen = _run_on_a_pty(argv, pump.env, lambda text: "%|" in text and "MB/s" in text)
    try:
        assert "big.bin:" in seen and "%|" in seen and "/24.0M [" in seen, seen
    finally:
        pump.stop(process)
    # On a pipe (or a log file): the log lines only.
    (pump.dst / "big.bin").unlink(missing_ok=True)
    pump.post(pump.src / "big.bin")
    log = tmp_path / "stderr.txt"
    with open(log, "wb") as stderr:
        process = _foreground_to(pump, stderr)
    assert wait_for(lambda: (pump.dst / "big.bin").exists(), timeout=60)
    pump.stop(process)
    text = log.read_text()
    assert "201 delivered" in text and "%|" not in text and "\r" not in text


def test_dd_post_shows_a_progress_bar_on_a_terminal_and_none_on_a_pipe(pump):
    _big_file(pump)
    (pump.src / "small.txt").write_text("x" * 1000)
    argv = [sys.executable, "-m", "dd.cli.main", "post", f"--post_broker={pump.broker_url}",
            f"--post_exchange={pump.exchange}", f"--post_base_url={pump.base_url}",
            f"--post_base_dir={pump.src}", str(pump.src)]      # a tree: its total is counted first
    process, seen = _run_on_a_pty(argv, pump.env, lambda text: False)    # to its end
    assert process.wait(timeout=30) == 0, seen
    assert "dd_post: 2 announced, 0 not announced" in seen
    assert "announcing:" in seen and "%|" in seen and "/24.0M" in seen, seen
    # On a pipe: no bar, and the summary once (before it, as no queue is bound yet, a warning
    # that says the notices reached none).
    result = pump.post(pump.src)
    assert "%|" not in result.stderr and "\r" not in result.stderr
    assert result.stderr.endswith("dd_post: 2 announced, 0 not announced\n")
    assert result.stderr.count("announced") == 2, result.stderr


@pytest.fixture
def lock(pump):
    """lock(directory): this user can no longer write into it: immutable for root (EPERM),
    read-only otherwise.  Unlocked at the end."""
    locked = []

    def lock_it(directory):
        directory.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(directory)], capture_output=True).returncode:
                pytest.skip("no immutable directories here, and root writes anywhere else")
        else:
            directory.chmod(0o555)
        locked.append(directory)
        return directory
    yield lock_it
    for directory in locked:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
        directory.chmod(0o755)


@pytest.fixture
def unwritable(pump, lock):
    return lock(pump.base / "locked") / "inside"


def test_a_directory_that_becomes_unwritable_is_named_as_a_permission_problem(pump, lock):
    pump.subscriber_config("sub", extra="retry_delay 1h")
    process = pump.foreground("sub")
    (pump.src / "one.txt").write_text("one")
    pump.post(pump.src / "one.txt")
    assert wait_for(lambda: (pump.dst / "one.txt").exists())
    lock(pump.dst)
    (pump.src / "two.txt").write_text("two")
    pump.post(pump.src / "two.txt")
    time.sleep(3)
    _, err = pump.stop(process)
    failed = [line for line in err.splitlines() if "two.txt" in line and "[ERROR]" in line]
    assert failed and "give dd's user write permission there, or change directory" in failed[0], err


def test_a_directory_that_cannot_be_written_is_a_configuration_error_at_start(pump, unwritable):
    pump.subscriber_config("sub", directory=unwritable)
    result = pump.command("subscribe", "foreground", "sub", timeout=60)
    assert result.returncode == 2
    said = [line for line in result.stderr.splitlines() if "[INFO]" not in line]
    assert len(said) == 1 and said[0].startswith("dd_subscribe: directory "), result.stderr
    assert "permission denied: dd_subscribe cannot write into" in result.stderr and "locked" in result.stderr
    assert not (pump.base / "state" / "subscribe" / "sub" / "i001.pid").exists()


def test_a_background_instance_that_cannot_write_logs_it_and_is_reported_failing(pump, unwritable):
    pump.subscriber_config("sub", directory=unwritable)
    assert pump.command("subscribe", "start", "sub").returncode == 0
    try:
        status = None
        for _ in range(100):
            status = pump.command("subscribe", "status", "sub")
            if status.returncode == 1:
                break
            time.sleep(0.2)
        assert status.returncode == 1 and "dead (0/1 instances)" in status.stdout, status.stdout
        log = (pump.base / "logs" / "subscribe_sub_01.log").read_text()
        assert "[ERROR] dd: dd_subscribe sub instance 1 cannot run: directory " in log
        assert "permission denied" in log
    finally:
        pump.command("subscribe", "stop", "sub")
