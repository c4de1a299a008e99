"""A RabbitMQ node of the test session's own with its MQTT and web-MQTT plugins (never the
machine's broker, whose plugins stay as they are): AMQP, MQTT 3.1.1 and MQTT over
WebSockets on free loopback ports, guest allowed from loopback."""
import dataclasses
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from dd.core.credentials import Url
from dd.pump import nginx
from tests.support.pump import reachable_by_workers
from tests.support.servers import free_port

START_TIMEOUT = 90


@dataclasses.dataclass
class RabbitMQ:
    node: str
    amqp_port: int
    mqtt_port: int
    ws_port: int

    @property
    def amqp_url(self):
        return f"amqp://guest:guest@127.0.0.1:{self.amqp_port}/"

    @property
    def mqtt_url(self):
        return f"mqtt://guest:guest@127.0.0.1:{self.mqtt_port}/"

    @property
    def ws_url(self):
        return f"ws://guest:guest@127.0.0.1:{self.ws_port}/ws"


def _listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_mqtt(tmp_path_factory):
    plugins = Path("/usr/lib/rabbitmq/lib").glob("*/plugins/rabbitmq_web_mqtt-*")
    if not shutil.which("rabbitmq-server") or not list(plugins):
        pytest.skip("rabbitmq-server with its MQTT plugins is not installed")
    base = tmp_path_factory.mktemp("rabbitmq-mqtt")
    reachable_by_workers(base)
    server = RabbitMQ(f"dd-test-{secrets.token_hex(4)}@localhost", free_port(), free_port(), free_port())
    (base / "rabbitmq.conf").write_text(f"""\
listeners.tcp.default = 127.0.0.1:{server.amqp_port}
mqtt.listeners.tcp.default = 127.0.0.1:{server.mqtt_port}
web_mqtt.tcp.ip = 127.0.0.1
web_mqtt.tcp.port = {server.ws_port}
loopback_users = none
""")
    (base / "enabled_plugins").write_text("[rabbitmq_mqtt,rabbitmq_web_mqtt].\n")
    for directory in ("mnesia", "log"):
        (base / directory).mkdir()
    # rabbitmq-server runs as the rabbitmq user: its files are that user's.
    subprocess.run(["chown", "-R", "rabbitmq", str(base)], check=True)
    env = {"RABBITMQ_NODENAME": server.node, "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
           "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
           "RABBITMQ_MNESIA_BASE": str(base / "mnesia"), "RABBITMQ_LOG_BASE": str(base / "log"),
           "RABBITMQ_FEATURE_FLAGS_FILE": str(base / "feature_flags"),
           "RABBITMQ_PLUGINS_EXPAND_DIR": str(base / "plugins-expand"),
           "RABBITMQ_NODE_PORT": str(server.amqp_port), "RABBITMQ_DIST_PORT": str(free_port()),
           "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    with open(base / "out.log", "wb") as out:
        process = subprocess.Popen(["rabbitmq-server"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for port in (server.amqp_port, server.mqtt_port, server.ws_port):
            while not _listening(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"RabbitMQ did not start: {(base / 'out.log').read_text()[-2000:]}")
                time.sleep(0.2)
        yield server
    finally:
        subprocess.run(["rabbitmqctl", "-q", "-n", server.node, "stop"], capture_output=True, timeout=120)
        if process.poll() is None:
            process.terminate()
        process.wait(30)


@pytest.fixture(scope="session")
def nginx_wss(tmp_path_factory, rabbitmq_mqtt):
    """An nginx terminating TLS on a free port and proxying the WebSocket at /ws to the node's
    web-MQTT listener, as a pump would expose MQTT on 443: (wss URL, its CA file)."""
    from tests.support.servers import NGINX, _start, _stop, self_signed
    if not shutil.which(NGINX) and not Path(NGINX).exists():
        pytest.skip("nginx is not installed")
    base = tmp_path_factory.mktemp("nginx-wss")
    self_signed(base / "cert.pem", base / "key.pem")
    port = free_port()
    (base / "root").mkdir()
    for kind in nginx.TEMP_KINDS:
        (base / kind).mkdir()
    # The data server's own configuration (dd.pump.nginx), as dd_sara writes it for data_server_websocket.
    (base / "nginx.conf").write_text(nginx.config(
        base=base, root=base / "root", port=None, tls=(port, base / "cert.pem", base / "key.pem"),
        user=("root", "root"), websocket=Url.parse(f"ws://127.0.0.1:{rabbitmq_mqtt.ws_port}/ws")))
    process = _start(nginx.command(NGINX, base), port, base / "nginx.out")
    yield f"wss://guest:guest@127.0.0.1:{port}/ws", base / "cert.pem"
    _stop(process)
