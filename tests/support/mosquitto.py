"""A Mosquitto of the test session's own (never the machine's on 1883): a plain and a TLS
listener on free loopback ports, a password file and an ACL file, persistence in its
directory, so that a restart keeps the sessions and what waits in them."""
import dataclasses
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.servers import _start, _stop, free_port, self_signed

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
#: User -> password; what each may do is in ACL.
USERS = {"dd": "dd-secret", "ann": "ann-secret", "bob": "bob-secret"}
#: dd is the pump's own user (anything); ann and bob are sources: each publishes under its own
#: xs_<user>/ only, and reads xpublic/ and the log messages routed to it on xr_<user>/.
ACL = """\
user dd
topic readwrite #

pattern readwrite xs_%u/#
pattern read xpublic/#
pattern read xr_%u/#
"""


@dataclasses.dataclass
class Mosquitto:
    base: Path
    port: int
    tls_port: int
    ca_file: Path
    process: subprocess.Popen = None

    def url(self, user="dd", tls=False, scheme=None):
        scheme = scheme or ("mqtts" if tls else "mqtt")
        return f"{scheme}://{user}:{USERS[user]}@127.0.0.1:{self.tls_port if tls else self.port}/"

    def start(self):
        self.process = _start([MOSQUITTO, "-c", str(self.base / "mosquitto.conf")], self.port,
                              self.base / "mosquitto.out")

    def stop(self):
        """SIGTERM: Mosquitto saves its sessions and their messages to its persistence file."""
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(10)

    def restart(self):
        self.stop()
        self.start()

    def log(self):
        return (self.base / "mosquitto.log").read_text(errors="replace")


def launch(base, password_file, acl_file):
    """A Mosquitto with these files, its TLS certificate and persistence in `base`, started."""
    self_signed(base / "cert.pem", base / "key.pem")
    server = Mosquitto(base, free_port(), free_port(), base / "cert.pem")
    (base / "mosquitto.conf").write_text(f"""\
user root
per_listener_settings false
allow_anonymous false
password_file {password_file}
acl_file {acl_file}
persistence true
persistence_location {base}/
autosave_interval 3600
max_queued_messages 0
max_inflight_messages 0
log_dest file {base / 'mosquitto.log'}
log_type error
log_type warning
log_type notice
listener {server.port} 127.0.0.1
listener {server.tls_port} 127.0.0.1
certfile {base / 'cert.pem'}
keyfile {base / 'key.pem'}
""")
    server.start()
    return server


def _installed():
    if not (shutil.which(MOSQUITTO) and shutil.which(MOSQUITTO_PASSWD)):
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory):
    _installed()
    base = tmp_path_factory.mktemp("mosquitto")
    passwords = base / "passwd"
    passwords.touch()
    for user, password in USERS.items():
        subprocess.run([MOSQUITTO_PASSWD, "-b", str(passwords), user, password], check=True)
    (base / "acl").write_text(ACL)
    server = launch(base, passwords, base / "acl")
    yield server
    _stop(server.process)


@pytest.fixture
def own_mosquitto(tmp_path):
    """Start a Mosquitto with the files a test wrote: own_mosquitto(password_file, acl_file)."""
    _installed()
    started = []

    def start(password_file, acl_file):
        base = tmp_path / f"mosquitto{len(started)}"
        base.mkdir()
        started.append(launch(base, password_file, acl_file))
        return started[-1]
    yield start
    for server in started:
        _stop(server.process)
