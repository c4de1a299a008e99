"""A real RabbitMQ for the tests: one fresh vhost per test session, deleted after; a relay
to it that a test can cut."""
import contextlib
import secrets
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672


def _rabbitmqctl(*args):
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60)


def _broker_up():
    try:
        with socket.create_connection((BROKER_HOST, BROKER_PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def vhost():
    """A vhost of its own for this run, where guest may do anything."""
    if not _broker_up() or not shutil.which("rabbitmqctl"):
        pytest.skip(f"RabbitMQ is not running on {BROKER_HOST}:{BROKER_PORT} (start it: rabbitmq-server -detached)")
    name = f"dd-test-{secrets.token_hex(4)}"
    for command in (["add_vhost", name], ["set_permissions", "-p", name, "guest", ".*", ".*", ".*"]):
        result = _rabbitmqctl(*command)
        assert result.returncode == 0, result.stderr
    yield name
    _rabbitmqctl("delete_vhost", name)


@pytest.fixture(scope="session")
def broker_url(vhost):
    """amqp URL (with guest's password) of the run's vhost."""
    return f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/{vhost}"


@pytest.fixture
def exchange():
    """An exchange name no other test uses."""
    return f"xtest_{uuid.uuid4().hex[:10]}"


def queue_counts(vhost, queue):
    """(ready, unacked) of a queue, as the broker counts them: a queue is drained when
    both are 0 (messages a consumer holds unacknowledged go back when it stops)."""
    out = _rabbitmqctl("list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged").stdout
    for line in out.splitlines():
        words = line.split()
        if words and words[0] == queue:
            return int(words[1]), int(words[2])
    raise AssertionError(f"queue {queue} not found: {out}")


class BrokerRelay:
    """A TCP relay to the broker that a test can cut: to a client connected through it,
    the broker goes away, and reconnecting is refused until the end.  With `tls` (a server
    ssl.SSLContext) it is the broker's amqps face: clients speak TLS to it."""

    def __init__(self, tls=None):
        self.listener = socket.create_server((BROKER_HOST, 0))
        self.port = self.listener.getsockname()[1]
        self.sockets = [self.listener]
        self.tls = tls
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, vhost, host=BROKER_HOST):
        return f"{'amqps' if self.tls else 'amqp'}://guest:guest@{host}:{self.port}/{vhost}"

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return      # cut
            if self.tls:
                try:
                    client.settimeout(10)
                    client = self.tls.wrap_socket(client, server_side=True)
                    client.settimeout(None)
                except OSError:     # the client refused our certificate
                    client.close()
                    continue
            upstream = socket.create_connection((BROKER_HOST, BROKER_PORT))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for each in (source, sink):
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)

    def cut(self):
        for each in self.sockets:
            with contextlib.suppress(OSError):
                each.shutdown(socket.SHUT_RDWR)
            each.close()
