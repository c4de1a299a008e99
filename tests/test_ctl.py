"""dd_ctl with real instances on the real broker: start, status (text and JSON), check, sanity, stop."""
import collections
import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dd.store import metrics, pidfile
from dd.admin import instances
from dd.cli import main
from dd.core.credentials import Url
from dd.core.environment import Environment
from dd.flow import Counters
from dd.store.retry import RetryStore
from dd.store.state import ConfigState
from tests.support.pump import wait_for
from tests.support.servers import free_port

NAMES = ("alpha", "beta", "gamma")


class Ctl:
    """dd_ctl run in-process with the pump's directories: (exit status, stdout, stderr)."""

    def __init__(self, pump):
        self.pump = pump
        self.base = pump.base
        self.later = 0.0  # seconds added to the clock dd_ctl reads

    def __call__(self, *argv):
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), config_dir=self.base / "config",
                          state_dir=self.base / "state", log_dir=self.base / "logs",
                          environ=dict(self.pump.env), clock=lambda: time.time() + self.later)
        status = main.run("ctl", list(argv), env)
        return status, env.stdout.getvalue(), env.stderr.getvalue()

    def json(self, *selectors):
        status, out, err = self("status", "--json", *selectors)
        assert "Traceback" not in err
        return status, json.loads(out)

    def state(self, name):
        return ConfigState(self.base / "state", "subscribe", name)


@pytest.fixture
def ctl(pump):
    the_ctl = Ctl(pump)
    yield the_ctl
    the_ctl("stop")


def configure(pump, name, extra="instances 2"):
    return pump.subscriber_config(name, extra=extra, directory=pump.base / "dst" / name)


def test_three_configurations_of_two_instances(pump, ctl):
    for name in NAMES:
        configure(pump, name)
    status, out, err = ctl("start")
    assert status == 0, err
    assert out.count("started 2 instance(s)") == 3
    status, out, _ = ctl("status")
    assert status == 0, out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["CONFIGURATION", "STATE", "INSTANCES"]
    assert lines[0].endswith("BROKER NODE")
    assert sorted(line.split()[:3] for line in lines[1:]) == [[f"subscribe/{n}", "running", "2/2"]
                                                           for n in NAMES]
    (pump.src / "one.txt").write_text("one")
    (pump.src / "two.txt").write_text("two!")
    pump.post(pump.src)
    for name in NAMES:
        assert wait_for(lambda name=name: len(list((pump.base / "dst" / name).glob("*.txt"))) == 2)

    def recorded():  # instances write their counters every few seconds
        _, report = ctl.json()
        return all(c["files"] == 2 and all(c["broker_nodes"].values()) for c in report["configurations"])
    assert wait_for(recorded, timeout=3 * metrics.INTERVAL)
    status, report = ctl.json()
    assert status == report["status"] == 0
    assert sorted(c["name"] for c in report["configurations"]) == list(NAMES)
    for entry in report["configurations"]:
        state = ctl.state(entry["name"])
        assert (entry["component"], entry["state"], entry["status"]) == ("subscribe", "running", 0)
        assert (entry["running"], entry["expected"], entry["dead"]) == (2, 2, [])
        assert entry["pids"] == {str(n): pid for n, pid in instances.running(state).items()}
        for pid in entry["pids"].values():
            cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
            assert [b"foreground", entry["name"].encode()] == cmdline[4:6]
        assert (entry["files"], entry["bytes"], entry["errors_last_hour"]) == (2, 7, 0)
        assert entry["last_activity"] <= report["time"]
        # A file delivered is sent after its notice was received; without late_after, never late.
        assert entry["last_received"] <= entry["last_sent"] <= report["time"]
        assert (entry["received_late"], entry["sent_late"]) == (False, False)
        assert entry["queue"] == state.known_queue()
        assert (entry["queue_depth"], entry["consumers"]) == (0, 2)
        assert entry["retries"] == 0 and entry["error"] is None
        assert entry["broker_nodes"] == {"1": str(Url.parse(pump.broker_url)), "2": str(Url.parse(pump.broker_url))}
        assert "guest:" not in json.dumps(entry)
    status, out, _ = ctl("stop")
    assert status == 0 and out.count("stopped 2 instance(s)") == 3
    status, report = ctl.json()
    assert status == report["status"] == 3
    assert {(c["state"], c["running"], c["files"]) for c in report["configurations"]} == {("stopped", 0, 2)}
    assert ctl("status")[0] == 3


def test_a_killed_instance_is_reported_and_restarted_by_sanity(pump, ctl):
    configure(pump, "alpha")
    configure(pump, "beta")
    assert ctl("start")[0] == 0
    killed = instances.running(ctl.state("alpha"))[2]
    identity = pidfile.identify(killed)
    os.kill(killed, signal.SIGKILL)
    assert wait_for(lambda: not identity.alive())
    status, out, _ = ctl("status")
    assert status == 1
    assert "subscribe/alpha: instance 2 is dead" in out
    assert ctl.json("subscribe/alpha")[1]["configurations"][0]["dead"] == [2]
    status, out, _ = ctl("check")
    assert status == 2
    assert out.startswith("DD CRITICAL - 2 configurations, 3/4 instances; subscribe/alpha: 1/2 instances (dead: 2)")
    assert " | instances=3;;;0 dead=1;;1;0 " in out
    status, out, err = ctl("sanity")
    assert status == 0, out + err
    assert "subscribe/alpha: instance(s) 2 died; restarting" in out
    assert ctl("status")[0] == 0
    restarted = instances.running(ctl.state("alpha"))
    assert set(restarted) == {1, 2} and restarted[2] != killed
    status, out, _ = ctl("check")
    assert (status, out.split(" | ")[0]) == (0, "DD OK - 2 configurations, 4/4 instances")


def test_sanity_finds_a_stray_instance_and_stops_it_on_request(pump, ctl):
    configure(pump, "alpha", extra="instances 1")
    assert ctl("start")[0] == 0
    pid_file = ctl.state("alpha").pid_file(1)
    stray = pidfile.read(pid_file)
    pid_file.unlink()
    status, out, _ = ctl("sanity")
    assert status == 1
    assert f"stray process {stray.pid}: " in out and "not stopped" in out
    status, out, _ = ctl("sanity", "--kill-strays")
    assert f"stray process {stray.pid}: " in out and "stopping" in out
    assert wait_for(lambda: not stray.alive())
    assert ctl("sanity")[0] == 0


def test_check_compares_the_backlog_with_the_thresholds(pump, ctl):
    configure(pump, "alpha", extra="instances 1\ncheck_backlog 3\ncheck_backlog_critical 6")
    assert ctl("start")[0] == 0
    status, out, _ = ctl("check")
    assert status == 0, out
    assert out.rstrip().endswith("backlog_subscribe/alpha=0;3;6;0")
    assert ctl("stop")[0] == 0
    for i in range(7):
        (pump.src / f"f{i}").write_text(str(i))
    pump.post(*sorted(pump.src.glob("f[0-3]")))
    status, out, _ = ctl("check")
    assert status == 1, out
    assert "subscribe/alpha: backlog 4 > 3" in out and "backlog_subscribe/alpha=4;3;6;0" in out
    pump.post(*sorted(pump.src.glob("f[4-6]")))
    status, out, _ = ctl("check")
    assert status == 2, out
    assert out.startswith("DD CRITICAL - 1 configurations, 0/1 instances; subscribe/alpha: backlog 7 > 6")
    assert ctl("start")[0] == 0
    assert wait_for(lambda: ctl("check")[0] == 0)


def test_check_json_says_what_the_nagios_line_says(pump, ctl):
    configure(pump, "alpha", extra="instances 1\ncheck_backlog 3\ncheck_backlog_critical 6")
    status, line, _ = ctl("check")
    status_json, out, err = ctl("check", "--json")
    assert status_json == status == 1, out + err   # stopped: a warning
    report = json.loads(out)
    assert (report["status"], report["state"]) == (1, "WARNING")
    assert report["summary"] == "1 configurations, 0/1 instances"
    assert line.startswith(f"DD WARNING - {report['summary']}")
    assert {"status": 1, "state": "WARNING", "configuration": "subscribe/alpha", "problem": "stopped"} \
        in report["findings"]
    perf = {p["label"]: p for p in report["perfdata"]}
    assert perf["instances"] == {"label": "instances", "value": 0, "warning": None, "critical": None, "min": 0}
    assert perf["dead"]["critical"] == 1
    assert "instances=0;;;0 dead=0;;1;0" in line
    assert ctl("start")[0] == 0
    assert wait_for(lambda: ctl("check", "--json")[0] == 0)
    report = json.loads(ctl("check", "--json")[1])
    assert report["findings"] == [] and report["state"] == "OK"
    assert perf_of(report, "backlog_subscribe/alpha") == {"label": "backlog_subscribe/alpha", "value": 0,
                                                          "warning": 3, "critical": 6, "min": 0}


def perf_of(report, label):
    return next(p for p in report["perfdata"] if p["label"] == label)


def test_check_json_of_a_check_that_cannot_run_is_unknown(pump, ctl):
    status, out, _ = ctl("check", "--json", "nosuch/thing")
    report = json.loads(out)
    assert status == report["status"] == 3 and report["state"] == "UNKNOWN"
    assert "nosuch" in report["summary"]


def test_check_warns_when_a_running_configuration_is_idle_too_long(pump, ctl):
    configure(pump, "alpha", extra="instances 1\ncheck_idle 1h\nlate_after 1h")
    assert ctl("start")[0] == 0
    assert wait_for(lambda: ctl.json()[1]["configurations"][0]["started"] is not None)
    assert ctl("check")[0] == 0

    def late():
        entry = ctl.json()[1]["configurations"][0]
        return entry["last_received"], entry["last_sent"], entry["received_late"], entry["sent_late"]
    assert late() == (None, None, False, False)
    ctl.later = 2 * 3600
    assert late() == (None, None, True, True)     # nothing received nor sent since it started, 2 h ago
    status, out, _ = ctl("check")
    assert status == 1
    assert "subscribe/alpha: no activity for 720" in out and "(check_idle 3600 s)" in out
    (pump.src / "one.txt").write_text("one")
    pump.post(pump.src)
    ctl.later = 0
    assert wait_for(lambda: ctl.json()[1]["configurations"][0]["last_activity"] is not None,
                    timeout=3 * metrics.INTERVAL)
    assert "LAST ACTIVITY" in ctl("status")[1] and "never" not in ctl("status")[1]
    assert wait_for(lambda: late()[1] is not None, timeout=3 * metrics.INTERVAL)
    received, sent, *lateness = late()
    assert received <= sent and lateness == [False, False]
    ctl.later = 1800
    assert ctl("check")[0] == 0 and late()[2:] == (False, False)
    ctl.later = 2 * 3600
    assert late()[2:] == (True, True)


def test_retries_are_counted_and_check_warns_when_they_grow(pump, ctl):
    configure(pump, "alpha", extra="instances 1")
    state = ctl.state("alpha")

    def keep(*keys):
        store = RetryStore(state.retry_file(1), ttl=3600)
        store.put((key, b"{}", "503 unreachable") for key in keys)
        store.close()
    keep("a.txt")
    assert ctl.json()[1]["configurations"][0]["retries"] == 1
    status, out, _ = ctl("check")
    assert status == 1 and "retries" not in out.split(" | ")[0]
    assert "retries=1;;;0" in out
    assert "retries growing" not in ctl("check")[1]
    keep("b.txt", "c.txt")
    status, out, _ = ctl("check")
    assert status == 1
    assert "subscribe/alpha: retries growing: 1 -> 3" in out
    assert ctl("status")[1].splitlines()[1].split()[-3:-1] == ["3", "0"]


def test_an_unreachable_broker_leaves_the_queue_depth_unknown(pump, ctl):
    config = pump.base / "config" / "subscribe" / "away.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f"broker amqp://guest@127.0.0.1:{free_port()}/\nqueue q_guest.away\n")
    status, report = ctl.json()
    entry = report["configurations"][0]
    assert (status, entry["state"], entry["queue"], entry["queue_depth"]) == (3, "stopped", "q_guest.away", None)
    status, out, err = ctl("status")
    assert status == 3 and "Traceback" not in err
    assert out.splitlines()[1].split()[-4:] == ["unknown", "0", "0", "-"]  # queue, retries, errors, node
    status, out, _ = ctl("check")
    assert status == 1
    assert "subscribe/away: depth of queue q_guest.away unknown" in out


def test_a_configuration_that_does_not_load_is_reported(pump, ctl):
    config = pump.base / "config" / "subscribe" / "bad.conf"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("instances many\n")
    status, out, err = ctl("status")
    assert (status, status.name, err) == (4, "UNKNOWN", "")   # LSB's "unknown", not "unavailable"
    assert out.splitlines()[1].split() == ["subscribe/bad", "error"]
    assert out.splitlines()[2].startswith("subscribe/bad: ") and "instances" in out.splitlines()[2]
    entry = ctl.json()[1]["configurations"][0]
    assert (entry["state"], entry["status"]) == ("error", 4) and "instances" in entry["error"]
    status, out, _ = ctl("check")
    assert status == 2
    assert out.startswith("DD CRITICAL - 1 configurations, 0/0 instances; subscribe/bad: does not load: ")
    assert ctl("start")[0] == 2


def test_foreground_runs_one_instance_that_status_sees(pump, ctl):
    configure(pump, "alpha", extra="instances 1")
    process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "ctl", "foreground", "subscribe/alpha"],
                               env=pump.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pump.processes.append(process)
    assert wait_for(lambda: ctl("status")[0] == 0)
    assert ctl.json()[1]["configurations"][0]["pids"] == {"1": process.pid}
    status, err = pump.stop(process)
    assert status == 0, err
    assert ctl("status")[0] == 3


def test_selection_list_show_and_errors(pump, ctl):
    for name in NAMES:
        configure(pump, name)
    status, out, _ = ctl("list", "subscribe/beta", "subscribe")
    assert status == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["subscribe/beta", "subscribe/alpha",
                                                                  "subscribe/gamma"]
    status, out, _ = ctl("show", "subscribe/gamma")
    assert status == 0 and "instances 2" in out
    status, out, err = ctl("status", "subscribe/nothing")
    assert (status, out) == (2, "")
    assert err.startswith("dd_ctl: no configuration subscribe/nothing: ") and len(err.splitlines()) == 1
    assert ctl("start", "watchers/x")[0] == 2
    assert ctl("cleanup")[0] == 2
    assert ctl("frobnicate")[0] == 2
    assert ctl("--help")[0] == 0


def test_edit_runs_the_editor_and_checks_the_result(pump, ctl):
    pump.env["EDITOR"] = "sh -c 'printf \"instances 3\\n\" > \"$0\"'"
    status, _, err = ctl("edit", "subscribe/fresh")
    assert status == 0, err
    assert (pump.base / "config" / "subscribe" / "fresh.conf").read_text() == "instances 3\n"
    pump.env["EDITOR"] = "sh -c 'printf \"instances none\\n\" > \"$0\"'"
    status, _, err = ctl("edit", "subscribe/fresh")
    assert status == 2 and "instances" in err
    assert ctl("edit", "fresh")[0] == 2


def test_metrics_rates_come_from_the_last_minute():
    counters, ring, start = Counters(), collections.deque(), 10_000.0
    assert metrics.sample(counters, ring, 1, start, start)["received_per_minute"] == 0.0
    counters.received, counters.posted = 30, 10
    counters.error_times.extend([start - 4000, start + 20])
    record = metrics.sample(counters, ring, 1, start, start + 30)
    assert (record["received_per_minute"], record["posted_per_minute"]) == (60.0, 20.0)
    assert record["errors_last_hour"] == 1
    counters.received = 40
    for seconds in (60, 90, 120):
        record = metrics.sample(counters, ring, 1, start, start + seconds)
    assert record["received_per_minute"] == 0.0  # nothing new in the last minute
    assert (record["received"], record["pid"], record["started"]) == (40, 1, start)


def test_metrics_record_transfers_in_flight_as_activity_and_carry_totals_over_a_restart(tmp_path):
    now = [10_000.0]
    transfers = metrics.Transfers(clock=lambda: now[0])
    counters = Counters()
    counters.last_activity, counters.delivered, counters.bytes = now[0], 3, 300
    counters.last_received, counters.last_sent = 9_500.0, 9_900.0
    tracker = transfers.begin("big.bin", 1000)
    now[0] += 100
    tracker.advance(400)
    record = metrics.sample(counters, collections.deque(), 1, 9_000.0, now[0], transfers=transfers)
    assert record["last_activity"] == now[0]       # the bytes of a long transfer are activity
    assert (record["last_received"], record["last_sent"]) == (9_500.0, 9_900.0)   # but nothing sent yet
    path = tmp_path / "i001.json"
    metrics.write(path, record)
    flying, = metrics.in_flight(metrics.read(path))
    assert flying == metrics.InFlight("big.bin", 400, 1000, 10_000.0, 4.0, 150.0)
    transfers.abort()
    with pytest.raises(KeyboardInterrupt):
        tracker.advance(1)
    tracker.end()
    assert transfers.in_flight() == []
    # A restarted instance goes on from its previous totals.
    counters.error_times.append(now[0])
    metrics.write(path, metrics.sample(counters, collections.deque(), 1, 9_000.0, now[0]))
    restarted = Counters()
    restarted.delivered, restarted.bytes = 1, 50
    again = metrics.sample(restarted, collections.deque(), 2, now[0], now[0] + 10,
                           base=metrics.carried(metrics.read(path)))
    assert (again["delivered"], again["bytes"], again["errors_last_hour"]) == (4, 350, 1)
    # So do the times it last received and sent: a restart does not make it look fresh, nor never.
    assert (again["last_received"], again["last_sent"]) == (9_500.0, 9_900.0)
    restarted.last_received = now[0] + 5
    assert metrics.sample(restarted, collections.deque(), 2, now[0], now[0] + 10,
                          base=metrics.carried(metrics.read(path)))["last_received"] == now[0] + 5
    assert metrics.in_flight(None) == [] and metrics.carried("garbage") == {}
