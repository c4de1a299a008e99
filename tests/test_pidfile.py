"""Pid files are believed only when they name their very process: a stale one (left from
another boot, a pid reused, the old format) never makes dd report, skip or signal a
stranger.  Real processes throughout: a `sleep` plays the stranger, and the instances and
the data server are dd's own, on the real broker and nginx."""
import os
import signal
import subprocess
import sys
import uuid

import pytest

from dd.admin import logs
from dd.store import pidfile
from dd.admin import instances
from tests.support.pump import wait_for
from tests.test_ctl import ctl  # noqa: F401 - the fixture
from tests.test_sara import relay  # noqa: F401 - the fixture

#: Stale pid files naming the stranger: what each says, and whether an instance died in
#: this boot (its pid since reused) or the file says nothing about this boot.
STALE = ("old format", "another boot", "another start time")


@pytest.fixture
def stranger():
    """A live process that is nobody's instance."""
    process = subprocess.Popen(["sleep", "300"])
    yield process
    process.kill()
    process.wait()


def write_stale(path, process, kind):
    me = pidfile.identify(process.pid)
    recorded = {"old format": None,
                "another boot": pidfile.Identity(me.pid, me.start_time, str(uuid.uuid4())),
                "another start time": pidfile.Identity(me.pid, me.start_time + 1, me.boot_id)}[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{me.pid}\n" + (f"{recorded}\n" if recorded else ""))


def died_this_boot(kind):
    return kind == "another start time"


def test_a_pid_file_names_its_process_until_that_process_is_gone(tmp_path, stranger):
    path = tmp_path / "i001.pid"
    written = pidfile.write(path, stranger.pid)
    assert pidfile.read(path) == written == pidfile.identify(stranger.pid)
    assert path.read_text().splitlines()[0] == str(stranger.pid)
    assert pidfile.live(path, legacy=lambda pid: False) == written
    stranger.kill()
    assert wait_for(lambda: not written.alive())          # a zombie does not run
    assert pidfile.live(path, legacy=lambda pid: True) is None
    assert not pidfile.send(written, signal.SIGTERM)
    assert not pidfile.stale(path)                         # it died in this boot


@pytest.mark.parametrize("kind", STALE)
def test_a_stale_pid_file_is_not_believed_and_its_pid_not_signalled(tmp_path, stranger, kind):
    path = tmp_path / "i001.pid"
    write_stale(path, stranger, kind)
    # A bare pid is believed only on the caller's evidence; an identity only on its own.
    assert pidfile.live(path, legacy=lambda pid: False) is None
    assert pidfile.stale(path) is not died_this_boot(kind)
    recorded = pidfile.read(path)
    if isinstance(recorded, pidfile.Identity):
        assert not pidfile.send(recorded, signal.SIGTERM)
    assert stranger.poll() is None


def test_an_old_pid_file_of_a_dd_instance_is_believed_and_of_another_not(pump, ctl, stranger):
    for name in ("alpha", "beta"):
        pump.subscriber_config(name, extra="instances 1", directory=pump.base / "dst" / name)
    assert ctl("start", "subscribe/beta")[0] == 0
    beta = instances.running(ctl.state("beta"))[1]
    log = logs.log_file(pump.base / "logs", "subscribe", "beta", 1)
    assert wait_for(lambda: "starting" in log.read_text())   # it wrote its own pid file
    # beta's instance, named by alpha's pid file, is not alpha's: alpha is stopped.
    ctl.state("alpha").pid_file(1).write_text(f"{beta}\n")
    assert pump.command("subscribe", "status", "alpha").returncode == 3
    assert "stopped 0 instance(s)" in pump.command("subscribe", "stop", "alpha").stdout
    # Written by a dd before identities: beta's own file, with a bare pid, still names it.
    ctl.state("beta").pid_file(1).write_text(f"{beta}\n")
    assert ctl.json("subscribe/beta")[1]["configurations"][0]["pids"] == {"1": beta}
    status, out, _ = ctl("sanity")
    assert status == 0 and "stray" not in out
    assert "stopped 1 instance(s)" in ctl("stop", "subscribe/beta")[1]
    assert wait_for(lambda: pidfile.identify(beta) is None or not pidfile.identify(beta).alive())


@pytest.mark.parametrize("kind", STALE)
def test_dd_subscribe_neither_reports_nor_skips_nor_signals_a_stranger(pump, stranger, kind):
    name = pump.subscriber_config("alpha", extra="instances 1")
    pid_file = pump.base / "state" / "subscribe" / name / "i001.pid"
    write_stale(pid_file, stranger, kind)
    status = pump.command("subscribe", "status", name)
    word = "dead" if died_this_boot(kind) else "stopped"
    assert (status.returncode, status.stdout.splitlines()[0]) == (1 if died_this_boot(kind) else 3,
                                                                 f"dd_subscribe {name}: {word} (0/1 instances)")
    stopped = pump.command("subscribe", "stop", name)
    assert "stopped 0 instance(s)" in stopped.stdout and not pid_file.exists()
    assert stranger.poll() is None
    write_stale(pid_file, stranger, kind)
    started = pump.command("subscribe", "start", name)
    assert "started 1 instance(s)" in started.stdout, started.stderr
    assert wait_for(lambda: pump.command("subscribe", "status", name).returncode == 0)
    instance = pidfile.read(pid_file)
    assert instance.pid != stranger.pid and "foreground" in pidfile.command_line(instance.pid)
    assert "stopped 1 instance(s)" in pump.command("subscribe", "stop", name).stdout
    assert not instance.alive() and stranger.poll() is None


@pytest.mark.parametrize("kind", STALE)
def test_dd_ctl_stop_and_sanity_leave_a_stranger_alone(pump, ctl, stranger, kind):
    pump.subscriber_config("alpha", extra="instances 1")
    pid_file = ctl.state("alpha").pid_file(1)
    write_stale(pid_file, stranger, kind)
    assert ctl("status")[0] == (1 if died_this_boot(kind) else 3)
    assert ctl.json()[1]["configurations"][0]["pids"] == {}
    assert "stopped 0 instance(s)" in ctl("stop")[1]
    assert stranger.poll() is None and not pid_file.exists()
    write_stale(pid_file, stranger, kind)
    status, out, err = ctl("sanity", "--kill-strays")
    assert status == 0, out + err
    assert "stray" not in out
    if died_this_boot(kind):
        # The instance died in this boot and its pid went to someone else: restarted.
        assert "subscribe/alpha: instance(s) 1 died; restarting" in out
        assert ctl("status")[0] == 0
        assert instances.running(ctl.state("alpha"))[1] != stranger.pid
    else:
        # Nothing about this boot: reported, removed, and the configuration is stopped.
        assert "subscribe/alpha: instance 1: stale pid file removed" in out
        assert not pid_file.exists() and ctl("status")[0] == 3
    assert stranger.poll() is None


# dd's master.pid with the stranger's true identity (a live process, but not our nginx) or
# a bare pid, and nginx's own nginx.pid without master.pid (as an older dd left it).
@pytest.mark.parametrize("file, identified", [("master.pid", True), ("master.pid", False),
                                              ("nginx.pid", False)])
def test_the_data_server_neither_reports_nor_signals_a_stranger(pump, relay, stranger, file, identified):
    name = relay.config("pump", pump.exchange)
    base = pump.base / "state" / "sara" / name / "dataserver"
    base.mkdir(parents=True)
    if identified:
        pidfile.write(base / file, stranger.pid)
    else:
        (base / file).write_text(f"{stranger.pid}\n")
    status = pump.command("sara", "status", name)
    assert status.returncode == 3 and f"serving {relay.tree}: stopped" in status.stdout
    stopped = pump.command("sara", "stop", name)
    assert stopped.returncode == 0 and f"serving {relay.tree}: stopped" in stopped.stdout
    assert stranger.poll() is None and not (base / "master.pid").exists()


def test_the_data_server_started_by_an_older_dd_is_known_by_its_command_line(pump, relay):
    name = relay.config("pump", pump.exchange)
    base = pump.base / "state" / "sara" / name / "dataserver"
    assert pump.command("sara", "start", name).returncode == 0
    master = pidfile.read(base / "master.pid")
    assert f"running (pid {master.pid})" in pump.command("sara", "status", name).stdout
    (base / "master.pid").unlink()                            # what an older dd left
    assert f"running (pid {master.pid})" in pump.command("sara", "status", name).stdout
    assert f"serving {relay.tree}: stopped" in pump.command("sara", "stop", name).stdout
    assert wait_for(lambda: not master.alive())


def test_the_instance_check_reads_how_dd_runs_instances(tmp_path):
    state_dir = tmp_path / "state"
    runs = {
        ("-m", "dd.cli.main", "subscribe", "foreground", "alpha", "--instance", "2"): ("subscribe", "alpha", 2),
        ("-m", "dd.cli.main", "ctl", "foreground", "sara/pump"): ("sara", "pump", 1),
        ("-m", "dd.cli.main", "subscribe", "foreground", str(tmp_path / "beta.conf")): ("subscribe", "beta", 1),
    }
    for argv, expected in runs.items():
        # A process that looks like the instance; it only sleeps (`-c` code, the rest argv).
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *argv],
                                   env=dict(os.environ, DD_STATE_DIR=str(state_dir)))
        try:
            assert wait_for(lambda pid=process.pid: "foreground" in pidfile.command_line(pid))
            assert instances.instance_of(process.pid) == (*expected, os.path.realpath(state_dir))
        finally:
            process.kill()
            process.wait()
