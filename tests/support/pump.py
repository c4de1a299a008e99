"""A small pump for integration tests: the run's vhost, nginx serving a source tree,
dd's directories in tmp, and helpers to run the real commands as processes."""
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import amqp
import pytest

from dd.core.credentials import Url


def manifest(root):
    """{relative path: sha256} of every regular file below root (temp files included;
    a file renamed or removed while it is read is left out: the tree is live)."""
    root = Path(root)
    found = {}
    for path in sorted(root.rglob("*")):
        try:
            if path.is_file() and not path.is_symlink():
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            pass
    return found


def compare(expected, actual):
    """(lost, invented, changed) between two manifests."""
    lost = sorted(set(expected) - set(actual))
    invented = sorted(set(actual) - set(expected))
    changed = sorted(p for p in set(expected) & set(actual) if expected[p] != actual[p])
    return lost, invented, changed


def reachable_by_workers(path):
    """Let a data server's unprivileged workers (www-data) reach `path`: pytest makes its
    temporary directories 0700, as a root user's home is; searchable is all they need."""
    for directory in [path, *Path(path).parents]:
        if directory == Path(tempfile.gettempdir()) or directory == Path("/"):
            break
        directory.chmod(directory.stat().st_mode | 0o001)


def wait_for(predicate, timeout=30.0, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Pump:
    def __init__(self, base, broker_url, nginx):
        self.base = base
        self.broker_url = broker_url
        self.exchange = f"xtest_{uuid.uuid4().hex[:8]}"
        name = base.name
        self.src = nginx.root / name
        self.src.mkdir(parents=True)
        self.base_url = f"{nginx.url}{name}/"
        self.dst = base / "dst"
        self.env = dict(os.environ, DD_CONFIG_DIR=str(base / "config"), DD_STATE_DIR=str(base / "state"),
                        DD_LOG_DIR=str(base / "logs"))
        self.processes = []
        #: The delivering component the subscriber helpers run: subscribe, or sara (a relay).
        self.component = "subscribe"

    def command(self, component, *args, timeout=120, check=False):
        result = subprocess.run([sys.executable, "-m", "dd.cli.main", component, *map(str, args)],
                                env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise AssertionError(f"dd_{component} {' '.join(map(str, args))} exited "
                                 f"{result.returncode}: {result.stderr}")
        return result

    def post(self, *paths, check=True, **options):
        args = [f"--post_broker={self.broker_url}", f"--post_exchange={self.exchange}",
                f"--post_base_url={self.base_url}", f"--post_base_dir={self.src}"]
        args += [f"--{k}={v}" for k, v in options.items()]
        return self.command("post", *args, *paths, check=check)

    def subscriber_config(self, name="sub", extra="", directory=None):
        path = self.base / "config" / self.component / f"{name}.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        relay = (f"post_broker {self.broker_url}\npost_exchange {self.exchange}_relayed\n"
                 f"post_base_url http://127.0.0.1:9/\n" if self.component == "sara" else "")
        path.write_text(f"broker {self.broker_url}\nexchange {self.exchange}\n{relay}"
                        f"{extra}\ndirectory {directory or self.dst}\n")
        self.command(self.component, "declare", name, check=True)
        return name

    def foreground(self, name="sub", *extra):
        process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", self.component, "foreground", name,
                                    *extra], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        self.processes.append(process)
        return process

    def stop(self, process, timeout=15):
        """SIGTERM, wait, and return (exit status, stderr)."""
        process.send_signal(signal.SIGTERM)
        try:
            _, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"did not stop within {timeout} s after SIGTERM: {err}") from None
        return process.returncode, err

    def publish_raw(self, body, topic="v02.post.x", headers=None):
        """Publish a hand-made message on the pump's exchange, as a hostile source would."""
        url = Url.parse(self.broker_url)
        connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                     password=url.password, virtual_host=url.path.lstrip("/"))
        connection.connect()
        channel = connection.channel()
        channel.exchange_declare(self.exchange, "topic", durable=True, auto_delete=False)
        channel.confirm_select()
        channel.basic_publish(amqp.Message(body, application_headers=headers or {}, delivery_mode=2),
                              exchange=self.exchange, routing_key=topic)
        connection.close()

    def queue_depth(self, name="sub"):
        queue = (self.base / "state" / self.component / name / "queue").read_text().strip()
        url = Url.parse(self.broker_url)
        connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                     password=url.password, virtual_host=url.path.lstrip("/"))
        connection.connect()
        try:
            _, ready, _ = connection.channel().queue_declare(queue, passive=True)
            return ready
        finally:
            connection.close()

    def close(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.communicate()


@pytest.fixture
def pump(tmp_path, broker_url, nginx_server):
    the_pump = Pump(tmp_path, broker_url, nginx_server)
    yield the_pump
    the_pump.close()
