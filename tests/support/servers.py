"""Real servers for the transfer tests: nginx, sshd and an FTP server (pyftpdlib) on free
loopback ports, each with its own configuration, keys and document root in a temporary directory."""
import dataclasses
import datetime
import getpass
import ipaddress
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional
from urllib.parse import quote

import pytest

from dd.pump import nginx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NGINX = "/usr/sbin/nginx"
SSHD = "/usr/sbin/sshd"
START_TIMEOUT = 10.0


@dataclasses.dataclass
class Server:
    root: Path
    url: str
    port: int
    key_file: Optional[Path] = None      # sshd: the client's private key
    known_hosts: Optional[Path] = None   # sshd: a known_hosts file with the server's key
    https_url: Optional[str] = None      # nginx: the same root over TLS
    ca_file: Optional[Path] = None       # nginx, ftp: the self-signed certificate that TLS uses
    password: Optional[str] = None       # ftp: the password of the URL's user
    ftps_url: Optional[str] = None       # ftp: the same root over explicit FTPS (required there)
    idle_url: Optional[str] = None       # ftp: the same root, dropping connections idle for 1 s


_handed_out = set()


#: Ports handed out are below the kernel's ephemeral range (32768 up), a block of them per
#: pytest-xdist worker: a port one worker chose is never another's, nor a client socket's.
PORT_BLOCK = 2000


def free_port():
    """A port free on 127.0.0.1 and not handed out before in this run: two servers told
    the same port fail to start."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    first = 12000 + PORT_BLOCK * int(worker.removeprefix("gw"))
    for port in random.sample(range(first, first + PORT_BLOCK), PORT_BLOCK):
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port left in {first}-{first + PORT_BLOCK - 1}")


def _start(command, port, log):
    """Run `command` until the test session ends, once it accepts connections on `port`."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    _wait_for(process, port, log)
    return process


def _wait_for(process, port, log):
    """Return once `process` accepts connections on `port`; stop it if it does not in time."""
    command = process.args
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(process)
                raise RuntimeError(f"{command[0]} did not start on port {port}: "
                                   f"{Path(log).read_text(errors='replace').strip()}") from None
            time.sleep(0.05)


def self_signed(cert_file, key_file):
    """A certificate for 127.0.0.1 that is its own CA, so clients can be told to trust it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))


def _stop(process):
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _workspace(tmp_path_factory, binary):
    """(private directory, document root in it, free port) for a server, if it is installed."""
    if not shutil.which(binary):
        pytest.skip(f"{binary} is not installed (apt-get install nginx-light openssh-server)")
    base = tmp_path_factory.mktemp(Path(binary).name)
    (base / "root").mkdir()
    return base, base / "root", free_port()


def start_nginx(base, root, port, tls_port):
    """nginx serving `root` over HTTP on `port` and HTTPS on `tls_port`, with a self-signed
    certificate made in `base` the first time (kept, so a restart serves the same one)."""
    if not (base / "cert.pem").exists():
        self_signed(base / "cert.pem", base / "key.pem")
    (base / "nginx.conf").write_text(nginx.config(
        base=base, root=root, port=port, autoindex=True, user=("root", "root"),
        tls=(tls_port, base / "cert.pem", base / "key.pem")))
    process = _start(nginx.command(NGINX, base), port, base / "nginx.out")
    return process, Server(root=root, url=f"http://127.0.0.1:{port}/", port=port,
                           https_url=f"https://127.0.0.1:{tls_port}/", ca_file=base / "cert.pem")


@pytest.fixture(scope="session")
def nginx_server(tmp_path_factory):
    base, root, port = _workspace(tmp_path_factory, NGINX)
    process, server = start_nginx(base, root, port, free_port())
    yield server
    _stop(process)


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory):
    base, root, port = _workspace(tmp_path_factory, SSHD)
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / key)],
                       check=True)
    host_key = (base / "host_key.pub").read_text().split()
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    (base / "sshd_config").write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {base}/host_key
PidFile {base}/sshd.pid
AuthorizedKeysFile {base}/client_key.pub
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
""")
    os.makedirs("/run/sshd", exist_ok=True)   # privilege separation directory
    process = _start([SSHD, "-D", "-e", "-f", str(base / "sshd_config")], port, base / "sshd.out")
    url = f"sftp://{getpass.getuser()}@127.0.0.1:{port}{quote(str(root))}"
    yield Server(root=root, url=url, port=port, key_file=base / "client_key",
                 known_hosts=known_hosts)
    _stop(process)


FTP_USER = "dd"


@pytest.fixture(scope="session")
def ftp_server(tmp_path_factory):
    try:
        import OpenSSL  # noqa: F401  pyftpdlib's TLS handler needs it
        import pyftpdlib  # noqa: F401
    except ImportError:
        pytest.skip("pyftpdlib or pyOpenSSL is not installed (pip install -e '.[test]', or apt-get "
                    "install python3-pyftpdlib python3-openssl)")
    base = tmp_path_factory.mktemp("ftp")
    root = base / "root"
    root.mkdir()
    port, tls_port, idle_port = free_port(), free_port(), free_port()
    self_signed(base / "cert.pem", base / "key.pem")
    password = "ftp-" + os.urandom(6).hex()
    script = Path(__file__).with_name("ftpserver.py")
    process = _start([sys.executable, str(script), str(root), FTP_USER, password, str(port), str(tls_port),
                      str(idle_port), str(base / "cert.pem"), str(base / "key.pem")],
                     port, base / "ftp.out")
    for each in (tls_port, idle_port):
        _wait_for(process, each, base / "ftp.out")
    yield Server(root=root, url=f"ftp://{FTP_USER}@127.0.0.1:{port}/", port=port, password=password,
                 ftps_url=f"ftps://{FTP_USER}@127.0.0.1:{tls_port}/", ca_file=base / "cert.pem",
                 idle_url=f"ftp://{FTP_USER}@127.0.0.1:{idle_port}/")
    _stop(process)
