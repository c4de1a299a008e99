"""Components run the way a user runs them, and what they publish, read from a queue of
the test's own."""
import subprocess
import sys

import amqp

from dd.core import formats
from dd.core.credentials import Url


class Recorder:
    """A queue of its own on the pump's exchange: every notice dd_watch published."""

    def __init__(self, pump):
        url = Url.parse(pump.broker_url)
        self.connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                          password=url.password, virtual_host=url.path.lstrip("/"))
        self.connection.connect()
        self.channel = self.connection.channel()
        self.channel.exchange_declare(pump.exchange, "topic", durable=True, auto_delete=False)
        self.queue, _, _ = self.channel.queue_declare("", exclusive=True)
        self.channel.queue_bind(self.queue, pump.exchange, "#")

    def drain(self):
        notices = []
        while True:
            message = self.channel.basic_get(self.queue, no_ack=True)
            if message is None:
                return notices
            notices.append(formats.decode(message.body, message.headers))

    def close(self):
        self.connection.close()


class Daemon:
    """`dd_COMPONENT foreground NAME` logging to a file, read while it runs (a pipe nobody reads
    would block it once full)."""

    def __init__(self, pump, component, name, env=None):
        self.pump, self.component, self.name = pump, component, name
        self.env = env or pump.env
        self.log = pump.base / f"{component}_{name}.log"
        self.process = None

    def start(self):
        with open(self.log, "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", self.component, "foreground",
                                             self.name], env=self.env, stdout=log, stderr=log)
        self.pump.processes.append(self.process)
        return self

    def text(self):
        return self.log.read_text() if self.log.exists() else ""

    def stop(self):
        self.process.terminate()
        assert self.process.wait(timeout=15) == 0, self.text()[-3000:]
