"""A RabbitMQ cluster of its own: three nodes on this machine, beside its broker and never
touching it.

Each node has its own name, ports (AMQP, management, distribution: never 25672, the machine
node's), directories and configuration; the nodes and rabbitmqctl share an Erlang cookie in
a HOME of their own, and speak through an epmd of their own on a free port.  Debian's
/usr/sbin/rabbitmqctl switches to the rabbitmq user and its cookie, and
/etc/rabbitmq/rabbitmq-env.conf names the machine's node: so the scripts of
/usr/lib/rabbitmq/bin are called, with an empty RABBITMQ_CONF_ENV_FILE.

`Cluster` is usable as is (the benchmarks start one); `rabbit_cluster` is the pytest fixture,
started once per session (three nodes take about 20 s and 130 MiB each), stopped and deleted
at its end.  A test may kill a node (SIGKILL) and start it again: it rejoins with its data.
"""
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port

BIN = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 90.0


@dataclasses.dataclass
class Node:
    name: str           # rabbit-node name, e.g. dd-1a2b-1@localhost
    port: int           # AMQP
    management_port: int
    dist_port: int
    base: Path
    process: "subprocess.Popen[bytes] | None" = None

    @property
    def pid_file(self) -> Path:
        return self.base / "pid"

    def url(self, vhost="/", user="guest", password="guest"):
        path = "" if vhost == "/" else vhost
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{path}"

    def answers(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False


class Cluster:
    """`size` RabbitMQ nodes clustered under `base` (a directory of its own, deleted by stop)."""

    def __init__(self, base, size=3, management=True):
        self.base = Path(base)
        self.home = self.base / "home"
        self.home.mkdir(parents=True)
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (self.base / "empty-env.conf").write_text("")
        self.epmd_port = free_port()
        self.management = management
        tag = secrets.token_hex(2)
        self.nodes = [Node(f"dd-{tag}-{n}@localhost", free_port(), free_port(), free_port(),
                           self.base / f"node{n}") for n in range(1, size + 1)]
        # rabbitmqctl's own distribution ports: a range of its own, beside the nodes'.
        self.ctl_port = free_port()

    def _env(self, node=None):
        env = {key: value for key, value in os.environ.items() if not key.startswith(("RABBITMQ_", "ERL_"))}
        env.update(HOME=str(self.home), ERL_EPMD_PORT=str(self.epmd_port),
                   RABBITMQ_CONF_ENV_FILE=str(self.base / "empty-env.conf"),
                   RABBITMQ_CTL_DIST_PORT_MIN=str(self.ctl_port), RABBITMQ_CTL_DIST_PORT_MAX=str(self.ctl_port + 10),
                   ERL_FLAGS="-kernel inet_dist_use_interface {127,0,0,1}")
        if node is not None:
            node.base.mkdir(exist_ok=True)
            config = node.base / "rabbitmq.conf"
            config.write_text(f"listeners.tcp.default = 127.0.0.1:{node.port}\n"
                              f"management.tcp.ip = 127.0.0.1\nmanagement.tcp.port = {node.management_port}\n"
                              "cluster_partition_handling = pause_minority\n")
            plugins = node.base / "enabled_plugins"
            plugins.write_text("[rabbitmq_management]." if self.management else "[].")
            env.update(RABBITMQ_NODENAME=node.name, RABBITMQ_NODE_PORT=str(node.port),
                       RABBITMQ_DIST_PORT=str(node.dist_port), RABBITMQ_MNESIA_BASE=str(node.base / "mnesia"),
                       RABBITMQ_LOG_BASE=str(node.base / "log"), RABBITMQ_PID_FILE=str(node.pid_file),
                       RABBITMQ_CONFIG_FILE=str(config), RABBITMQ_ENABLED_PLUGINS_FILE=str(plugins))
        return env

    def ctl(self, node, *args, timeout=60):
        """rabbitmqctl -n NODE ARGS; its CompletedProcess (an AssertionError if it fails)."""
        result = subprocess.run([str(BIN / "rabbitmqctl"), "-q", "-n", node.name, *args], env=self._env(),
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode:
            raise AssertionError(f"rabbitmqctl -n {node.name} {' '.join(args)}: {result.stderr or result.stdout}")
        return result

    def start(self, node):
        """Start `node` (again, after a kill: it rejoins with its data) and wait until it serves."""
        self._launch(node)
        self._await(node)

    def _launch(self, node):
        env = self._env(node)
        with open(node.base / "server.out", "ab") as log:
            node.process = subprocess.Popen([str(BIN / "rabbitmq-server")], env=env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)

    def _await(self, node):
        deadline = time.monotonic() + START_TIMEOUT
        while not node.answers():
            if node.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"RabbitMQ node {node.name} did not start: "
                                   f"{(node.base / 'server.out').read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        self.ctl(node, "await_startup", timeout=START_TIMEOUT)

    def start_all(self):
        for node in self.nodes:     # side by side: booting is most of the time
            self._launch(node)
        for node in self.nodes:
            self._await(node)
        first, *others = self.nodes
        for node in others:     # one by one: two joining at once may each find the other unready
            self.ctl(node, "stop_app")
            self.ctl(node, "join_cluster", first.name)
            self.ctl(node, "start_app")
            self.ctl(node, "await_startup")
        return self

    def kill(self, node):
        """SIGKILL the node: no goodbye to its clients or its peers."""
        pid = int(node.pid_file.read_text().split()[0]) if node.pid_file.exists() else node.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if node.process is not None:
            node.process.wait(30)
        # Its epmd registration and listener go with the process.
        deadline = time.monotonic() + 10
        while node.answers() and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self, node):
        self.start(node)

    def urls(self, vhost="/", **login):
        """The nodes' AMQP URLs, separated by spaces, as a broker option takes them."""
        return " ".join(node.url(vhost, **login) for node in self.nodes)

    def add_vhost(self, name=None):
        """A vhost of its own, where guest may do anything; its name."""
        name = name or f"dd-test-{secrets.token_hex(4)}"
        self.ctl(self.nodes[0], "add_vhost", name)
        self.ctl(self.nodes[0], "set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    def running(self):
        return [node for node in self.nodes if node.answers()]

    def stop(self):
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
                    self.ctl(node, "stop", timeout=30)
                try:
                    node.process.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(node.process.pid, signal.SIGKILL)
                    node.process.wait()
            # Erlang's helpers (erl_child_setup, inet_gethost) of a killed node.
            with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
                if node.process is not None:
                    os.killpg(node.process.pid, signal.SIGKILL)
        subprocess.run(["epmd", "-port", str(self.epmd_port), "-kill"], env=self._env(), capture_output=True,
                       check=False, timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start_all()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()


def available():
    """Why a cluster cannot start here, or None."""
    if not (BIN / "rabbitmq-server").exists():
        return f"RabbitMQ is not installed ({BIN}/rabbitmq-server)"
    if not shutil.which("epmd") and not Path("/usr/lib/erlang/bin/epmd").exists():
        return "Erlang's epmd is not installed"
    return None


@pytest.fixture(scope="session")
def rabbit_cluster():
    """A three-node RabbitMQ cluster of this session's own (a Cluster)."""
    reason = available()
    if reason:
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="dd-cluster-"))
    with Cluster(base) as cluster:
        yield cluster
