"""Which HTTP requests carry a password: a relay that records every byte dd sends stands
between dd and a real nginx that asks for a password in dd's private area
(/private/<readers>/), in a directory of its own (/guarded/, as any web server may), and
redirects /moved/ there.  A password goes with a private file's requests, with the one
repeat of a request that was answered 401, and nowhere else: never with a public file's,
never below another path, scheme, port or host than its credentials.conf line names."""
import base64
import contextlib
import dataclasses
import http.client
import io
import socket
import threading
from typing import Optional

import pytest

from dd.pump import nginx, private
from dd.core.credentials import Credentials, Url
from dd.transfer import DeniedError, PermanentError, Transports
from dd.transfer.http import ASKED_LIMIT
from tests.support.pump import wait_for
from tests.support.servers import NGINX, _start, _stop, _workspace

PASSWORD = "bob-pw-7Qz"
TOKEN = "Basic " + base64.b64encode(f"bob:{PASSWORD}".encode()).decode()
FILES = {"public/open.txt": b"for all", "private/bob/secret.txt": b"for bob",
         "guarded/a/one.txt": b"guarded one", "guarded/a/two.txt": b"guarded two",
         "guarded/b/other.txt": b"guarded other"}


@dataclasses.dataclass
class Request:
    method: str
    target: str
    authorization: Optional[str]   # None when the request carried none


class RecordingRelay:
    """A TCP relay to a port on 127.0.0.1 that keeps every byte its clients send."""

    def __init__(self, port):
        self._upstream = port
        self._lock = threading.Lock()
        self._streams = []    # what each client connection sent
        self._sockets = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path):
        return f"http://127.0.0.1:{self.port}/{path}"

    def _accept(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return   # closed
            server = socket.create_connection(("127.0.0.1", self._upstream))
            stream = bytearray()
            with self._lock:
                self._streams.append(stream)
                self._sockets += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, stream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, None), daemon=True).start()

    def _pipe(self, source, sink, stream):
        try:
            while data := source.recv(65536):
                if stream is not None:
                    with self._lock:   # kept before it is passed on: the answer comes after
                        stream += data
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def sent(self):
        """Every byte the clients sent."""
        with self._lock:
            return b"".join(self._streams)

    def requests(self, target=None):
        """The requests the clients sent (those for `target` alone, if given), in the order
        each connection sent them.  GET and HEAD have no body: a blank line ends each."""
        with self._lock:
            streams = [bytes(stream) for stream in self._streams]
        found = []
        for stream in streams:
            for head in stream.split(b"\r\n\r\n")[:-1]:
                line, _, fields = head.partition(b"\r\n")
                method, path, _ = line.decode().split(" ")
                headers = http.client.parse_headers(io.BytesIO(fields + b"\r\n\r\n"))
                found.append(Request(method, path, headers.get("Authorization")))
        return [request for request in found if target in (None, request.target)]

    def close(self):
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)   # wakes the accepting thread
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


@pytest.fixture(scope="module")
def data_server(tmp_path_factory):
    """(nginx port, document root): dd's data server, which asks for bob's password in
    /private/bob/, and, as a web server of one's own may, in /guarded/ too."""
    base, root, port = _workspace(tmp_path_factory, NGINX)
    passwords = base / "htpasswd"
    passwords.mkdir()
    # Written as dd_sara writes them: nginx must accept dd's hashes.
    server = Url.parse(f"http://127.0.0.1:{port}/")
    assert private.Htpasswd(passwords, credentials(f"http://bob:{PASSWORD}@127.0.0.1:{port}/"), server).allow(
        ["bob"]) == "bob"
    config = nginx.config(base=base, root=root, port=port, private=passwords, user=("root", "root"))
    anchor = f"root {root};"
    assert anchor in config
    (base / "nginx.conf").write_text(config.replace(anchor, anchor + f"""
        location /guarded/ {{ auth_basic "guarded"; auth_basic_user_file {passwords}/bob; }}
        location /moved/ {{ return 302 /private/bob/secret.txt; }}"""))
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    process = _start(nginx.command(NGINX, base), port, base / "nginx.out")
    yield port, root
    _stop(process)


@pytest.fixture
def relay(data_server):
    the_relay = RecordingRelay(data_server[0])
    yield the_relay
    the_relay.close()


def credentials(*lines):
    return Credentials(Url.parse(line) for line in lines)


def fetch(transports, url):
    transport, path = transports.for_url(url)
    with transport.open_read(path) as stream:
        return stream.read()


def test_a_public_file_goes_without_the_password_and_a_private_one_with_it(relay):
    with Transports(credentials(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/"), timeout=10) as transports:
        for name in ("public/open.txt", "private/bob/secret.txt"):
            assert fetch(transports, relay.url(name)) == FILES[name]
            transport, path = transports.for_url(relay.url(name))
            assert transport.stat(path).size == len(FILES[name])
            with transport.open_read(path, 4, 3) as stream:
                assert stream.read() == FILES[name][4:7]
    public, private = relay.requests("/public/open.txt"), relay.requests("/private/bob/secret.txt")
    assert [request.method for request in public] == ["GET", "HEAD", "GET"]
    assert [request.authorization for request in public] == [None] * 3
    # Private: the password goes with the first request, no 401 asks for it.
    assert [request.authorization for request in private] == [TOKEN] * 3


def test_a_directory_that_asks_gets_one_repeat_with_the_password_and_is_remembered(relay):
    with Transports(credentials(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/"), timeout=10) as transports:
        for name in ("guarded/a/one.txt", "guarded/a/two.txt", "guarded/b/other.txt", "public/open.txt"):
            assert fetch(transports, relay.url(name)) == FILES[name]
    asked = {name: [request.authorization for request in relay.requests(f"/{name}")]
             for name in ("guarded/a/one.txt", "guarded/a/two.txt", "guarded/b/other.txt", "public/open.txt")}
    assert asked == {"guarded/a/one.txt": [None, TOKEN],     # 401, then once more with it
                     "guarded/a/two.txt": [TOKEN],           # its directory asked before
                     "guarded/b/other.txt": [None, TOKEN],   # another directory asks anew
                     "public/open.txt": [None]}


def test_remembered_directories_are_bounded(relay, data_server):
    root = data_server[1]
    names = [f"guarded/many/{i}/f.txt" for i in range(ASKED_LIMIT + 1)]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    with Transports(credentials(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/"), timeout=10) as transports:
        for name in [*names, names[0], names[-1]]:
            assert fetch(transports, relay.url(name)) == b"x"
    # The first directory was forgotten to make room for the last one, which is still known.
    assert [request.authorization for request in relay.requests(f"/{names[0]}")] == [None, TOKEN, None, TOKEN]
    assert [request.authorization for request in relay.requests(f"/{names[-1]}")] == [None, TOKEN, TOKEN]


def test_a_wrong_password_is_denied_after_one_repeat(relay):
    wrong = "Basic " + base64.b64encode(b"bob:wrong").decode()
    with Transports(credentials(f"http://bob:wrong@127.0.0.1:{relay.port}/"), timeout=10) as transports:
        for name in ("guarded/a/one.txt", "private/bob/secret.txt"):
            with pytest.raises(DeniedError, match="HTTP 401") as denied:
                fetch(transports, relay.url(name))
            assert "check this server's password in credentials.conf" in str(denied.value)
    assert [request.authorization for request in relay.requests("/guarded/a/one.txt")] == [None, wrong]
    assert [request.authorization for request in relay.requests("/private/bob/secret.txt")] == [wrong]


def test_a_password_for_one_directory_never_goes_to_another(relay):
    with Transports(credentials(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/guarded/a/"),
                    timeout=10) as transports:
        assert fetch(transports, relay.url("guarded/a/one.txt")) == FILES["guarded/a/one.txt"]
        for name in ("guarded/b/other.txt", "private/bob/secret.txt", "guarded/a/../b/other.txt",
                     "guarded/a/%2E%2E/b/other.txt"):
            with pytest.raises(DeniedError, match="no password in credentials.conf is for this URL"):
                fetch(transports, relay.url(name))
    carried = [request.target for request in relay.requests() if request.authorization]
    assert carried == ["/guarded/a/one.txt"]
    assert len(relay.requests()) == 2 + 4   # one.txt's 401 and repeat, one request for each other


@pytest.mark.parametrize("line", [
    "https://bob:{password}@127.0.0.1:{relay}/",        # the same port, over TLS
    "http://bob:{password}@127.0.0.1:{nginx}/",         # the same server, by another port
    "http://bob:{password}@localhost:{relay}/",         # the same port, by another name
], ids=["https", "port", "host"])
def test_a_password_goes_only_to_its_scheme_host_and_port(relay, data_server, line):
    line = line.format(password=PASSWORD, relay=relay.port, nginx=data_server[0])
    with Transports(credentials(line), timeout=10) as transports:
        for name in ("private/bob/secret.txt", "guarded/a/one.txt"):
            with pytest.raises(DeniedError, match="HTTP 401"):
                fetch(transports, relay.url(name))
    assert len(relay.requests()) == 2
    sent = relay.sent()
    assert sent and PASSWORD.encode() not in sent and TOKEN.split()[1].encode() not in sent


def test_a_redirect_is_not_followed_with_the_password(relay):
    redirected = "HTTP 302.*to 'http://127.0.0.1:.*/private/bob/secret.txt'"
    with Transports(credentials(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/"), timeout=10) as transports, \
            pytest.raises(PermanentError, match=redirected):
        fetch(transports, relay.url("moved/x"))
    assert relay.requests() == [Request("GET", "/moved/x", None)]


def test_a_password_in_a_url_goes_with_that_url_only(relay):
    secret = "private/bob/secret.txt"
    with Transports(timeout=10) as transports:
        assert fetch(transports, relay.url(secret).replace("//", f"//bob:{PASSWORD}@")) == FILES[secret]
        with pytest.raises(DeniedError, match="HTTP 401"):
            fetch(transports, relay.url(secret).replace("//", "//bob@"))
    assert [request.authorization for request in relay.requests(f"/{secret}")] == [TOKEN, None]


@pytest.mark.broker
def test_dd_subscribe_sends_the_password_only_where_it_is_asked_for(pump, relay, data_server):
    root = data_server[1]
    config = pump.base / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "credentials.conf").write_text(f"http://bob:{PASSWORD}@127.0.0.1:{relay.port}/\n")
    (config / "credentials.conf").chmod(0o600)
    names = ["public/open.txt", "private/bob/secret.txt", "guarded/a/one.txt"]
    pump.subscriber_config("sub")
    pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                 f"--post_base_url={relay.url('')}", f"--post_base_dir={root}",
                 *(root / name for name in names), check=True)
    process = pump.foreground("sub")
    arrived = wait_for(lambda: all((pump.dst / name).exists() for name in names), timeout=30)
    _, log = pump.stop(process)
    assert arrived, log[-2000:]
    assert {name: (pump.dst / name).read_bytes() for name in names} == {name: FILES[name] for name in names}
    carried = {name: [request.authorization for request in relay.requests(f"/{name}")] for name in names}
    assert carried == {"public/open.txt": [None], "private/bob/secret.txt": [TOKEN],
                       "guarded/a/one.txt": [None, TOKEN]}
    assert "Traceback" not in log
