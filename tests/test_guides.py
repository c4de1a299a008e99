"""README.rst's guides, followed literally on this machine.

The guides are one walkthrough: a pump on localhost, a subscriber, a source, the pump as
a service, a link to a second pump, a poller of an FTP server feeding a sender to an SFTP
server.  Every ``sh`` block runs as written, in order, in one bash session, as root (as
the guides say), with HOME in a temporary directory, so that ~/.config/dd and everything
else the guides put under ~ is this run's own, and with this checkout's dd_* commands
first on PATH.  The blocks that only name things (the pump's vhost, users and ports) get
unique values instead, so that runs never share broker objects or ports.  Before some
steps the test waits, within a deadline, for what a reader waits for; after some, it
checks what the guide says happens.  Whatever happens, the run's processes, vhosts and
users are removed at the end.
"""
import contextlib
import hashlib
import io
import itertools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import amqp
import pytest
import urllib3

pytest.importorskip("docutils", reason="reading README.rst needs docutils (apt-get install python3-docutils)")
import docutils.core  # noqa: E402
from dd.core import report  # noqa: E402 - after the check above
from tests.support import walkthrough  # noqa: E402
from tests.support.metadata import console_scripts
from tests.support.pump import wait_for
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 60.0
WAIT = 30.0
#: A pool of its own: urllib3.request() is 2.x only, and Debian 12 ships 1.26.
HTTP = urllib3.PoolManager(retries=False)
MANAGEMENT = "http://127.0.0.1:15672/api"
GUEST = urllib3.make_headers(basic_auth="guest:guest")


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Walk:
    """The walkthrough's world: its HOME, the names it was given, and ways to look at it."""

    def __init__(self, base, cluster):
        self.base = base
        #: What "A pump on three nodes" names its RabbitMQ nodes by.
        self.cluster_ports = {f"amqp_{n}": str(node.port) for n, node in enumerate(cluster.nodes, 1)}
        self.cluster_ports["admin_1"] = str(cluster.nodes[0].management_port)
        self.cluster_api = f"http://127.0.0.1:{cluster.nodes[0].management_port}/api"
        self.home = base / "home"
        self.home.mkdir()
        self.readme = walkthrough.README.read_text(encoding="utf-8")
        self.names = {}
        self.observer = None
        self.bin = base / "bin"
        self.bin.mkdir()
        # The commands as installed, running this checkout: the test suite may run where
        # no console script is installed (tools/test-debian).
        for command in console_scripts():
            wrapper = self.bin / command
            component = command.removeprefix("dd_")
            wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m dd.cli.main {component} "$@"\n')
            wrapper.chmod(0o755)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("DD_", "XDG_")) and k != "PYTHONPATH"}
        env.update(HOME=str(self.home), PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",
                   PYTHONPATH=str(ROOT), LC_ALL="C.UTF-8")
        self.env = env

    def path(self, text):
        """A path the guides name, as ~/..."""
        return self.home / text.removeprefix("~/")

    @property
    def pump_dir(self):
        """Where the walkthrough keeps the pump's tree and dd's state ($pumpdir)."""
        return Path(self.names["pumpdir"]) if "pumpdir" in self.names else self.base / "no-pumpdir-yet"

    @property
    def state_dir(self):
        return self.pump_dir / "state"

    @property
    def log_dir(self):
        return self.home / ".local" / "state" / "dd" / "log"

    def unique_names(self, step):
        """The assignments of a names step, with values no other run uses; the cluster's
        ports are those of the test suite's own three RabbitMQ nodes."""
        tag = secrets.token_hex(3)
        chosen = {variable: self.cluster_ports.get(variable) or (str(free_port()) if value.isdigit()
                                                                 else f"{value}-t{tag}")
                  for variable, value in step.assignments().items()}
        self.names.update(chosen)
        return " ".join(f"{k}={v}" for k, v in chosen.items()) + "\n"

    def observe_logs(self):
        """Read ann's log messages as they arrive, with a queue of the test's own bound to
        xr_<ann>: the broker puts each one in ann's dd_log queue at the same time."""
        self.observer = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                        virtual_host=self.names["vhost"])
        self.observer.connect()
        self.observing = self.observer.channel()
        queue = self.observing.queue_declare("", exclusive=True)[0]
        self.observing.queue_bind(queue, exchange=f"xr_{self.names['ann']}", routing_key="#")
        self.observed_queue, self.observed = queue, set()

    def logged(self, user_variable, *rel_paths):
        """Whether ann has been sent a log message of a delivery by this user of each file."""
        while (message := self.observing.basic_get(self.observed_queue, no_ack=True)) is not None:
            made = report.decode(message.body)
            self.observed.add((made.code, made.user, made.rel_path))
        return all((201, self.names[user_variable], path) in self.observed for path in rel_paths)

    def dd_logs(self, lines=15):
        """The last lines of every dd log file, for failure messages."""
        text = ""
        for path in sorted(self.log_dir.glob("*.log")):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            text += f"--- {path.name}\n" + "\n".join(tail) + "\n"
        return text

    def cleanup(self):
        """Stop what the walkthrough started and remove its broker objects, whatever state
        it stopped in."""
        if self.observer:
            with contextlib.suppress(Exception):
                self.observer.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(["dd_ctl", "stop"], env={**self.env, "DD_STATE_DIR": str(self.state_dir)},
                           capture_output=True, timeout=60)
        # Whatever dd_ctl could not stop (a configuration it cannot read, say).
        # ... and the FTP and SFTP servers the guide starts.
        for pid_file in [*self.state_dir.rglob("i*.pid"), *self.state_dir.rglob("master.pid"),
                         self.pump_dir / "provider/ftp.pid", self.pump_dir / "partner/sshd.pid",
                         self.pump_dir / "mqtt/mosquitto.pid", self.pump_dir / "redis/redis.pid"]:
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text().split()[0])  # a pid file's first line is the pid
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
                if any(name in command for name in (b"dd.cli.main", b"nginx", b"pyftpdlib", b"sshd", b"mosquitto",
                                                    b"redis-server")):
                    os.kill(pid, signal.SIGKILL)
        for name, value in self.names.items():
            if name == "pumpdir":
                shutil.rmtree(value, ignore_errors=True)
            elif not value.isdigit():
                for api, kind in itertools.product((MANAGEMENT, self.cluster_api), ("vhosts", "users")):
                    with contextlib.suppress(urllib3.exceptions.HTTPError):
                        HTTP.request("DELETE", f"{api}/{kind}/{value}", headers=GUEST)


# What a reader waits for before a step ("a moment later"), with a deadline.
def _mirrored(walk):
    log = walk.path("~/bob/received.log")
    return (walk.path("~/bob/data/obs/today/pressure.txt").exists()
            and log.exists() and len(log.read_text().splitlines()) >= 2)


TODAY = ("obs/today/temperature.txt", "obs/today/pressure.txt")
#: The provider's file on the FTP server, and where the sender puts it, below $pumpdir.
PUSHED = ("provider/data/radar/scan-0600.txt", "partner/incoming/radar/scan-0600.txt")
BEFORE = {
    "mirrored": ("bob's mirror and his script's log", _mirrored),
    "delivery-log": ("log messages for ann of the relay's three deliveries and bob's two",
                     lambda walk: walk.logged("feeder", *TODAY, "obs/today/notes.doc")
                     and walk.logged("bob", *(f"{walk.names['ann']}/{path}" for path in TODAY))),
    "watched": ("wind.txt at bob's", lambda walk: walk.path("~/bob/data/obs/live/wind.txt").exists()),
    "private-fetched": ("warning.txt at bob's",
                        lambda walk: walk.path("~/bob/data/obs/for-bob/warning.txt").exists()),
    "linked": ("rain.txt on pump B, and a log message of its delivery there for ann",
               lambda walk: (walk.pump_dir / "tree-b" / walk.names["ann"] / "obs/live/rain.txt").exists()
               and walk.logged("feeder_b", f"{walk.names['ann']}/obs/live/rain.txt")),
    "pushed": ("the FTP server's file in the partner's SFTP directory",
               lambda walk: (walk.pump_dir / PUSHED[1]).exists()),
    "mqtt-mirrored": ("ann's three files at bob's, over MQTT",
                      lambda walk: all(walk.path(f"~/bob/mqtt/obs/today/{name}").exists()
                                       for name in ("temperature.txt", "pressure.txt", "notes.doc"))),
    "nodes-relayed": ("ann's ten files in the nodes' trees",
                      lambda walk: len(_on_nodes(walk)) >= len(NODE_FILES)),
    "node-died": ("ann's five more files on nodes 2 and 3",
                  lambda walk: len(_on_nodes(walk)) >= len(NODE_FILES) + len(LATER_FILES)),
    "wis2-mirrored": ("ann's three files at bob's, announced in WIS2 over MQTT",
                      lambda walk: all(walk.path(f"~/bob/wis2/obs/today/{name}").exists()
                                       for name in ("temperature.txt", "pressure.txt", "notes.doc"))),
}


#: What ann posts twice for the pump's nodes.
NODE_FILES = [f"r{i}.txt" for i in range(1, 11)]
#: What ann posts once node 1 is dead.
LATER_FILES = [f"r{i}.txt" for i in range(11, 16)]


def _on_nodes(walk):
    return sorted(p.name for p in walk.pump_dir.glob(f"node*/tree/{walk.names['ann']}/obs/nodes/*")
                  if not p.name.startswith("."))  # a download under its temporary name


# What the guides say happens, checked after a step: check(walk, output) asserts.
def _packages_installed(walk, step):
    words = step.script.split()
    packages = words[words.index("-y") + 1:]
    missing = [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout != "install ok installed"]
    assert not missing, f"the guide installs {missing}, which this machine lacks: run tools/install"


def _pump_started(walk, output):
    port = walk.names["port"]
    for configuration in ("sara/pump", "shovel/logs"):
        assert any(line.split()[:2] == [configuration, "running"] for line in output.splitlines()), configuration
    # The data server answers, and serves nothing yet.
    assert HTTP.request("GET", f"http://localhost:{port}/nothing").status == 404


def _mirror_checked(walk, output):
    today = walk.path("~/ann/obs/today")
    mirror = walk.path("~/bob/data/obs/today")
    assert sorted(p.name for p in mirror.iterdir()) == ["pressure.txt", "temperature.txt"]
    for name in ("pressure.txt", "temperature.txt"):
        assert _sha256(mirror / name) == _sha256(today / name)
        assert str(mirror / name) in output
        size = (today / name).stat().st_size
        assert f"obs/today/{name} {size} bytes sha512:" in output, "the on_file script did not run for " + name
    assert "notes.doc" not in output


def _delivery_log(walk, output):
    def delivered(user, name):
        return any("201 delivered" in line and f" {user}@" in line and line.endswith(name)
                   for line in output.splitlines())
    names = walk.names
    for name in (*TODAY, "obs/today/notes.doc"):
        assert delivered(names["feeder"], name), f"no delivery of {name} by the relay"
    for name in TODAY:
        assert delivered(names["bob"], name), f"no delivery of {name} to bob"


def _watched(walk, output):
    assert output == "wind 12 kt\n"


def _private(walk, output):
    ann, bob, port = walk.names["ann"], walk.names["bob"], walk.names["port"]
    assert output.splitlines() == ["gale warning", "401", "401", "gale warning"]
    tree = walk.pump_dir / "tree"
    stored = tree / "private" / bob / ann / "obs/for-bob/warning.txt"
    assert stored.read_text() == "gale warning\n"
    assert stored.stat().st_mode & 0o777 == 0o640 and stored.parent.stat().st_mode & 0o777 == 0o750
    assert not (tree / ann / "obs/for-bob").exists(), "private data in the public tree"
    assert HTTP.request("GET", f"http://localhost:{port}/{ann}/obs/for-bob/warning.txt").status == 404


def _service(walk, output):
    configurations = ["sara/pump", "shovel/logs", "subscribe/bob", "watch/ann"]
    lines = output.splitlines()
    assert [line.split()[0] for line in lines[:4]] == configurations
    for configuration in configurations:
        assert any(line.split()[:2] == [configuration, "running"] for line in lines), configuration
    at = next(i for i, line in enumerate(lines) if line.startswith("DD OK - "))
    nagios = lines[at]
    assert nagios.startswith("DD OK - 4 configurations, 4/4 instances |"), nagios
    # The line the guide shows, but for the counts.
    shown = next(line.strip() for line in walk.readme.splitlines() if line.strip().startswith("DD OK - "))
    assert re.sub(r"\d+", "N", nagios) == re.sub(r"\d+", "N", shown), shown
    # check --json: the same check as one object.
    report = json.loads("\n".join(lines[at + 1:]))
    assert (report["state"], report["findings"]) == ("OK", [])
    assert report["summary"] == "4 configurations, 4/4 instances"
    assert {p["label"] for p in report["perfdata"]} >= {"instances", "dead", "backlog_subscribe/bob"}


def _watched_pump(walk, output):
    lines = output.splitlines()
    # dd_log --trace: the relay took the file in, bob got it.
    assert lines[0].startswith(f"obs/today/temperature.txt  (source {walk.names['ann']})"), output
    assert any(line.split()[2:3] == ["ingested"] and f" {walk.names['feeder']}@" in line for line in lines), output
    assert any(line.split()[2:3] == ["delivered"] and f" {walk.names['bob']}@" in line for line in lines), output
    # /metrics: bob's subscription has delivered what the guides gave it so far.
    bob = [line for line in lines if 'configuration="bob"' in line]
    assert len(bob) == 1 and float(bob[0].split()[-1]) >= 2, output


def _linked(walk, output):
    assert output.splitlines()[0] == "rain 0.2 mm"
    assert any("201 delivered" in line and f" {walk.names['feeder_b']}@" in line and line.endswith("obs/live/rain.txt")
               for line in output.splitlines()), "pump B's delivery did not come back to ann"


def _pushed(walk, output):
    served, pushed = (walk.pump_dir / path for path in PUSHED)
    assert output == "radar scan 0600Z\n"
    assert _sha256(pushed) == _sha256(served)
    leftovers = [p.name for p in pushed.parent.iterdir() if p != pushed]
    assert not leftovers, f"more than the file in the partner's directory: {leftovers}"


def _nodes_relayed(walk, output):
    # Two copies of each file, one relay of it: each is on one node, whichever got which copy.
    assert _on_nodes(walk) == sorted(NODE_FILES)
    assert sorted(line.rsplit("/", 1)[-1] for line in output.split()) == sorted(NODE_FILES)


def _node_died(walk, output):
    # The later files on nodes 2 and 3, each once on the nodes: none lost or held with node 1.
    assert set(LATER_FILES) <= set(output.split())
    assert _on_nodes(walk) == sorted(NODE_FILES + LATER_FILES)


def _torn_down(walk, output):
    for value in walk.names.values():
        if not value.isdigit():
            for api, kind in itertools.product((MANAGEMENT, walk.cluster_api), ("vhosts", "users")):
                assert HTTP.request("GET", f"{api}/{kind}/{value}", headers=GUEST).status == 404, value
    assert not walk.pump_dir.exists()
    # An sshd session process ends a moment after its client, the stopped sender, has left.
    assert wait_for(lambda: not _running(walk), timeout=10, interval=0.1), \
        f"processes of the walkthrough still run: {_running(walk)}"


def _running(walk):
    return [pid for pid in os.listdir("/proc") if pid.isdigit() and _uses(int(pid), walk.pump_dir)]


def _uses(pid, directory):
    """Whether process `pid` names `directory` in its command line or environment."""
    try:
        return any(str(directory).encode() in Path(f"/proc/{pid}/{what}").read_bytes()
                   for what in ("cmdline", "environ"))
    except OSError:
        return False


#: Steps that only look at what the pump did, which shows a moment later (log messages are
#: routed to the provenance store, counters written every 5 s): run again until they show
#: what the guide says, for WAIT seconds at most.
LOOKING = {"metrics"}
AFTER = {
    # Not a check: from here on the test sees the log messages ann is sent.
    "audit": lambda walk, output: walk.observe_logs(),
    "pump-start": _pump_started,
    "mirrored": _mirror_checked,
    "delivery-log": _delivery_log,
    "watched": _watched,
    "private-fetched": _private,
    "service": _service,
    "metrics": _watched_pump,
    "linked": _linked,
    "pushed": _pushed,
    "nodes-relayed": _nodes_relayed,
    "node-died": _node_died,
    "teardown": _torn_down,
}
NOT_RUN_CHECKS = {"packages": _packages_installed, "packages-partner": _packages_installed}


def test_every_sh_block_is_a_named_step_and_every_check_has_its_step():
    steps = walkthrough.steps()
    names = {s.name for s in steps}
    assert len(steps) > 10
    assert set(BEFORE) | set(AFTER) | set(NOT_RUN_CHECKS) <= names
    for step in steps:
        if step.mode == walkthrough.NAMES:
            assert step.assignments()
        if step.mode == walkthrough.NOT_RUN:
            assert step.reason, step


def test_a_block_without_a_step_marker_is_refused():
    with pytest.raises(ValueError, match="no step marker"):
        walkthrough.steps("Title\n=====\n\n.. code-block:: sh\n\n    rm -rf ~\n")
    with pytest.raises(ValueError, match="followed by no sh block"):
        walkthrough.steps("Title\n=====\n\n.. step: lost\n\n.. code-block:: text\n\n    words\n")


@pytest.mark.parametrize("name", ["README.rst", "bench/README.rst"])
def test_the_readmes_render_without_a_warning(name):
    """A table one column short or a stray line renders as an error box on the page."""
    warnings = io.StringIO()
    docutils.core.publish_doctree((ROOT / name).read_text(encoding="utf-8"), settings_overrides={
        "syntax_highlight": "none", "report_level": 2, "halt_level": 5, "warning_stream": warnings})
    assert warnings.getvalue() == ""


@pytest.mark.skipif(not shutil.which("nginx") and not os.access("/usr/sbin/nginx", os.X_OK),
                    reason="nginx is not installed")
def test_the_nginx_site_in_the_guide_is_valid(tmp_path):
    sites = walkthrough.code_blocks("nginx")
    assert len(sites) == 1
    (tmp_path / "site").write_text(sites[0])
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nevents {{}}\nhttp {{ include {tmp_path}/site; }}\n")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", f"{tmp_path}/error.log",
                             "-c", f"{tmp_path}/nginx.conf"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def _ready():
    """Why the walkthrough cannot run here, or None."""
    if os.geteuid() != 0:
        return "the guides are followed as root"
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return "RabbitMQ is not running on 127.0.0.1:5672 (start it: rabbitmq-server -detached)"
    # The tools the guides use are checked by the guide step that installs them.
    return None


def _fail(step, why, walk, output=None):
    __tracebackhide__ = True
    ran = "" if output is None else f"--- its output\n{output}"
    raise walkthrough.StepFailed(f"{step} {why}\n--- the step\n{step.script}{ran}{walk.dd_logs()}")


def test_the_guides_work_as_written(tmp_path, rabbit_cluster):
    reason = _ready()
    if reason:
        pytest.skip(reason)
    walk = Walk(tmp_path, rabbit_cluster)
    shell = walkthrough.Shell(tmp_path / "steps", walk.env, cwd=walk.home)
    try:
        for step in walkthrough.steps():
            if step.mode == walkthrough.NOT_RUN:
                if step.name in NOT_RUN_CHECKS:
                    NOT_RUN_CHECKS[step.name](walk, step)
                continue
            if step.name in BEFORE:
                what, ready = BEFORE[step.name]
                if not wait_for(lambda ready=ready: ready(walk), timeout=WAIT, interval=0.1):
                    _fail(step, f"was not ready: no {what} within {WAIT:g} s", walk)
            script = walk.unique_names(step) if step.mode == walkthrough.NAMES else step.script
            deadline = time.monotonic() + WAIT
            while True:
                status, output = shell.run(step, script, STEP_TIMEOUT)
                if status != 0:
                    _fail(step, f"failed with exit status {status}", walk, output)
                try:
                    AFTER.get(step.name, lambda walk, output: None)(walk, output)
                    break
                except AssertionError as error:
                    if step.name not in LOOKING or time.monotonic() > deadline:
                        _fail(step, f"did not do what the guide says: {error}", walk, output)
                time.sleep(1)
    finally:
        shell.close()
        walk.cleanup()
