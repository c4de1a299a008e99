"""One conformance suite for every transport, against real servers (tests/support/servers.py),
then the shared copy loop."""
import concurrent.futures
import dataclasses
import errno
import hashlib
import io
import itertools
import os
import posixpath
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

from dd.core import checksum
from dd.core.credentials import Credentials, Url
from dd.transfer import DeniedError, PermanentError, Transports, TransferError, transport_class
from dd.transfer.copy import CopyResult, copy

MiB = 1 << 20
KINDS = ["file", "http", "sftp", "ftp", "ftps"]
WRITABLE = [kind for kind in KINDS if transport_class(kind).capabilities.write]
OPTIONAL_OPERATIONS = ["write", "stat", "list", "delete", "rename", "entries"]


@dataclasses.dataclass
class Remote:
    kind: str
    transports: Transports
    root: Path       # the served directory, as seen on this machine
    base_url: str    # its URL, without a trailing slash

    def url(self, rel):
        return f"{self.base_url}/{quote(rel)}"

    def open(self, rel):
        """(transport, decoded path) of `rel`."""
        return self.transports.for_url(self.url(rel))

    def put(self, rel, data):
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return self.open(rel)


def _served(request, tmp_path_factory, kind):
    """(served directory, its URL, transport options, credentials) of a kind of server."""
    if kind == "file":
        root = tmp_path_factory.mktemp("files")
        return root, "file://" + quote(str(root)), {}, None
    if kind == "http":
        server = request.getfixturevalue("nginx_server")
        return server.root, server.url.rstrip("/"), {}, None
    if kind in ("ftp", "ftps"):
        # The password comes from credentials.conf, as in production.
        server = request.getfixturevalue("ftp_server")
        url = (server.url if kind == "ftp" else server.ftps_url).rstrip("/")
        credentials = Credentials([Url.parse(url).with_password(server.password)])
        return server.root, url, {"ftps": {"ca_file": str(server.ca_file)}}, credentials
    server = request.getfixturevalue("sshd_server")
    return server.root, server.url, {"sftp": {"known_hosts": str(server.known_hosts),
                                              "key_filename": str(server.key_file)}}, None


def _serve(request, tmp_path_factory):
    root, base_url, options, credentials = _served(request, tmp_path_factory, request.param)
    with Transports(credentials, timeout=10, options=options) as transports:
        yield Remote(request.param, transports, root, base_url)


def _fresh_subdirectory(served):
    sub = uuid.uuid4().hex
    (served.root / sub).mkdir()
    return dataclasses.replace(served, root=served.root / sub, base_url=f"{served.base_url}/{sub}")


served = pytest.fixture(scope="module", params=KINDS)(_serve)
served_writable = pytest.fixture(scope="module", params=WRITABLE)(_serve)


@pytest.fixture
def remote(served):
    """One fresh directory per test, on each kind of server."""
    return _fresh_subdirectory(served)


@pytest.fixture
def writable(served_writable):
    """One fresh directory per test, on each kind of server that can be written to."""
    return _fresh_subdirectory(served_writable)


def read(transport, path, offset=0, length=None):
    with transport.open_read(path, offset, length) as stream:
        return stream.read()


@pytest.fixture(scope="session")
def blob():
    return os.urandom(5 * MiB)


@pytest.mark.parametrize("size", [0, 1, 5 * MiB])
@pytest.mark.parametrize("announced", [True, False], ids=["length", "no-length"])
def test_full_read_is_checksummed_while_copied(remote, blob, size, announced):
    data = blob[:size]
    transport, path = remote.put("file.bin", data)
    out = io.BytesIO()
    with transport.open_read(path) as source:
        result = copy(source, out, length=size if announced else None,
                      hasher=checksum.new("sha512"))
    assert out.getvalue() == data
    assert result == CopyResult(size, hashlib.sha512(data).hexdigest())


SIZE = 300_001


@pytest.mark.parametrize("offset, length", [
    (0, 1000), (SIZE // 2, 4097), (SIZE - 1000, 1000), (SIZE - 1, 1), (0, SIZE),
    (123_456, None), (0, 0)])
def test_ranged_read_gives_exactly_the_range(remote, blob, offset, length):
    data = blob[:SIZE]
    transport, path = remote.put("ranged.bin", data)
    end = None if length is None else offset + length
    assert read(transport, path, offset, length) == data[offset:end]


@pytest.mark.parametrize("offset, length", [(90, 20), (99, 2), (100, 1), (200, 10)])
def test_range_past_the_end_is_an_error(remote, offset, length):
    transport, path = remote.put("short.bin", bytes(100))
    with pytest.raises(TransferError, match="short.bin"):
        read(transport, path, offset, length)


@pytest.mark.parametrize("name", [
    "with space.txt", "hash#tag.txt", "100%.txt", "%41 stays percent-41.txt", "plus+sign.txt",
    "question?mark.txt", "unicodé 雪.txt", "a/b/c/d/e/deep.txt"])
def test_awkward_names(remote, name):
    data = name.encode()
    transport, path = remote.put(name, data)
    assert path.endswith("/" + name)
    assert read(transport, path) == data
    assert transport.stat(path).size == len(data)


def test_stat_gives_size_and_mtime(remote):
    transport, path = remote.put("stat.bin", bytes(1234))
    os.utime(remote.root / "stat.bin", (1_600_000_000, 1_600_000_000))
    stat = transport.stat(path)
    assert stat.size == 1234
    assert stat.mtime == 1_600_000_000


def test_entries_give_kinds_sizes_and_mtimes_of_the_directory_only(remote):
    """What dd_poll walks: files and directories with size and mtime (an HTML listing's to the
    minute), one level only; a name the protocol must quote comes back as it is."""
    remote.put("tree/odd name #1.txt", bytes(1234))
    remote.put("tree/sub/deeper.txt", b"x")
    for path in ("tree/odd name #1.txt", "tree/sub"):
        os.utime(remote.root / path, (1_599_999_960, 1_599_999_960))
    transport, folder = remote.open("tree")
    entries = transport.entries(folder)
    assert [(e.name, e.directory) for e in entries] == [("odd name #1.txt", False), ("sub", True)]
    assert entries[0].size == 1234 and entries[0].mtime == 1_599_999_960
    assert entries[1].size is None
    assert [e.name for e in transport.entries(folder + "/sub")] == ["deeper.txt"]


def test_entries_of_a_missing_directory_is_not_retryable(remote):
    transport, path = remote.open("no such directory")
    with pytest.raises(TransferError) as raised:
        transport.entries(path)
    assert raised.value.retryable is False


@pytest.mark.parametrize("operation", [
    lambda transport, path: read(transport, path),
    lambda transport, path: read(transport, path, 0, 0),
    lambda transport, path: read(transport, path, 10, 10),
    lambda transport, path: transport.stat(path)], ids=["read", "empty-range", "range", "stat"])
def test_missing_file_is_not_retryable(remote, operation):
    transport, path = remote.open("no such file.bin")
    with pytest.raises(TransferError, match="no%20such%20file.bin") as raised:
        operation(transport, path)
    assert raised.value.retryable is False


def test_capabilities_are_honest(remote):
    """Operations whose flag is False are not offered; those whose flag is True work."""
    transport, path = remote.put("dir/one.txt", b"one")
    flags = dataclasses.asdict(transport.capabilities)
    for operation in OPTIONAL_OPERATIONS:
        assert hasattr(transport, operation) == flags[operation], operation
    folder = posixpath.dirname(path)
    if flags["ranged_read"]:
        assert read(transport, path, 1, 2) == b"ne"
    if flags["stat"]:
        assert transport.stat(path).size == 3
    if flags["write"]:
        transport.write(f"{folder}/two.txt", io.BytesIO(b"two"))
        assert (remote.root / "dir/two.txt").read_bytes() == b"two"
    if flags["list"]:
        assert transport.list(folder) == ["one.txt", "two.txt"][:1 + flags["write"]]
    if flags["entries"]:
        assert [entry.name for entry in transport.entries(folder)] == ["one.txt", "two.txt"][:1 + flags["write"]]
    if flags["rename"]:
        transport.rename(path, f"{folder}/renamed.txt")
        assert (remote.root / "dir/renamed.txt").read_bytes() == b"one"
        path = f"{folder}/renamed.txt"
    if flags["delete"]:
        transport.delete(path)
        assert not (remote.root / "dir" / os.path.basename(path)).exists()


def test_write_makes_directories_and_checksums(writable, blob):
    transport, path = writable.open("new/deep/dir/file.bin")
    result = transport.write(path, io.BytesIO(blob), length=len(blob),
                             hasher=checksum.new("xxh128"))
    assert (writable.root / "new/deep/dir/file.bin").read_bytes() == blob
    assert result == CopyResult(len(blob), checksum.of_file(writable.root / "new/deep/dir/file.bin",
                                                             "xxh128"))
    assert os.listdir(writable.root / "new/deep/dir") == ["file.bin"]


def test_failed_write_leaves_nothing(writable):
    transport, path = writable.open("partial.bin")
    with pytest.raises(TransferError, match="ended after 5 of 10 bytes"):
        transport.write(path, io.BytesIO(b"12345"), length=10)
    assert os.listdir(writable.root) == []


def test_rename_replaces_an_existing_file(writable):
    transport, old = writable.put("old.txt", b"new content")
    _, new = writable.put("new.txt", b"stale")
    transport.rename(old, new)
    assert os.listdir(writable.root) == ["new.txt"]
    assert (writable.root / "new.txt").read_bytes() == b"new content"


def test_one_transport_per_server(remote):
    first, _ = remote.open("a")
    second, _ = remote.open("b/c")
    assert first is second


def credentials_for(server_url):
    """credentials.conf with a (wrong) password for the URL's user, or alice, at that server."""
    url = Url.parse(server_url)
    return Credentials([url.with_password("s3cret", user=url.user or "alice")])


def test_errors_never_show_passwords(nginx_server):
    with Transports(credentials=credentials_for(nginx_server.url)) as transports:
        url = nginx_server.url.replace("http://", "http://alice:hunter2@") + "missing.txt"
        transport, path = transports.for_url(url)
        with pytest.raises(TransferError) as raised:
            read(transport, path)
    message = str(raised.value)
    assert "alice@127.0.0.1" in message
    assert "hunter2" not in message and "s3cret" not in message


def test_sftp_refused_login_is_permanent_and_hides_password(sshd_server):
    options = {"sftp": {"known_hosts": str(sshd_server.known_hosts)}}
    with Transports(credentials=credentials_for(sshd_server.url), timeout=10, options=options) as transports:
        transport, path = transports.for_url(sshd_server.url)
        with pytest.raises(TransferError, match="login refused") as raised:
            transport.stat(path)
    assert raised.value.retryable is False
    assert "s3cret" not in str(raised.value)


def test_sftp_unknown_host_key_is_refused(sshd_server):
    options = {"sftp": {"key_filename": str(sshd_server.key_file)}}
    with Transports(timeout=10, options=options) as transports:
        transport, path = transports.for_url(sshd_server.url)
        with pytest.raises(TransferError, match="not in known_hosts") as raised:
            transport.stat(path)
    assert raised.value.retryable is False
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1" in str(raised.value)


def test_https_verifies_certificates(nginx_server):
    (nginx_server.root / "tls.txt").write_bytes(b"secure")
    url = nginx_server.https_url + "tls.txt"
    with Transports(timeout=10) as transports:
        transport, path = transports.for_url(url)
        with pytest.raises(TransferError, match="TLS failed.*certificate verify failed") as raised:
            read(transport, path)
    assert raised.value.retryable is False
    assert "SSL_CERT_FILE=" in str(raised.value)
    with Transports(timeout=10, options={"https": {"verify": str(nginx_server.ca_file)}}) as trusting:
        transport, path = trusting.for_url(url)
        assert read(transport, path) == b"secure"


def test_https_to_a_plain_http_port_says_so(nginx_server):
    plain = nginx_server.url.replace("http://", "https://") + "tls.txt"
    with Transports(timeout=10) as transports:
        transport, path = transports.for_url(plain)
        with pytest.raises(TransferError, match="TLS failed") as raised:
            read(transport, path)
    assert "check that the server speaks TLS on this port" in str(raised.value)
    assert raised.value.retryable is False


def test_http_server_down_is_retryable():
    from tests.support.servers import free_port
    with Transports(timeout=5) as transports:
        transport, path = transports.for_url(f"http://127.0.0.1:{free_port()}/x")
        with pytest.raises(TransferError, match="refused") as raised:
            transport.stat(path)
    assert raised.value.retryable is True


def ftp_transports(server, url, password=None, **options):
    """Transports with credentials.conf's line for `url`, its password the server's unless given."""
    line = Url.parse(url).with_password(password or server.password)
    return Transports(Credentials([line]), timeout=10, options={"ftps": options})


def test_ftp_refused_login_is_denied_and_names_the_server_not_the_password(ftp_server):
    with ftp_transports(ftp_server, ftp_server.url, password="hunter2") as transports:
        transport, path = transports.for_url(ftp_server.url + "x")
        with pytest.raises(DeniedError, match="login refused") as raised:
            transport.stat(path)
    message = str(raised.value)
    assert message.startswith(f"ftp://dd@127.0.0.1:{ftp_server.port}: login refused: 530 ")
    assert "hunter2" not in message and ftp_server.password not in message
    assert raised.value.retryable is False


def test_ftps_verifies_certificates(ftp_server):
    (ftp_server.root / "tls.txt").write_bytes(b"secure")
    with ftp_transports(ftp_server, ftp_server.ftps_url) as transports:
        transport, path = transports.for_url(ftp_server.ftps_url + "tls.txt")
        with pytest.raises(PermanentError, match="TLS failed: certificate verify failed") as raised:
            read(transport, path)
    assert "ftps_ca_file" in str(raised.value)
    with ftp_transports(ftp_server, ftp_server.ftps_url, ca_file=str(ftp_server.ca_file)) as trusting:
        transport, path = trusting.for_url(ftp_server.ftps_url + "tls.txt")
        assert read(transport, path) == b"secure"


@pytest.mark.parametrize("plain, message", [
    (True, r"the server requires TLS: 5\d\d .*\(use an ftps:// URL\)$"),
    (False, r"the server does not speak TLS: 5\d\d .*\(it offers no FTPS \(AUTH TLS\); use ftp://")],
    ids=["ftp-to-ftps-only", "ftps-to-plain"])
def test_ftp_and_ftps_mixed_up_say_so_in_one_line(ftp_server, plain, message):
    # The FTPS-only server with an ftp:// URL; the plain one with an ftps:// URL.
    url = ftp_server.ftps_url.replace("ftps://", "ftp://") if plain else \
        ftp_server.url.replace("ftp://", "ftps://")
    with ftp_transports(ftp_server, url, ca_file=str(ftp_server.ca_file)) as transports:
        transport, path = transports.for_url(url + "x")
        with pytest.raises(PermanentError, match=message) as raised:
            transport.stat(path)
    assert "\n" not in str(raised.value)


def test_ftp_connection_dropped_while_idle_is_made_again(ftp_server):
    (ftp_server.root / "idle.txt").write_bytes(b"still here")
    with ftp_transports(ftp_server, ftp_server.idle_url) as transports:
        transport, path = transports.for_url(ftp_server.idle_url + "idle.txt")
        assert read(transport, path) == b"still here"
        time.sleep(2.5)   # the server drops connections idle for 1 s
        assert read(transport, path, 6, 4) == b"here"
        assert transport.stat(path).size == 10


def test_ftp_connection_serves_on_after_a_range_cut_short(ftp_server, blob):
    # A range ends the RETR before the end of the file: the control channel must be in step
    # again, on the same connection, for what comes next.
    (ftp_server.root / "big.bin").write_bytes(blob)
    for url in (ftp_server.url, ftp_server.ftps_url):
        with ftp_transports(ftp_server, url, ca_file=str(ftp_server.ca_file)) as transports:
            transport, path = transports.for_url(url + "big.bin")
            for offset in (0, MiB, 3 * MiB):
                assert read(transport, path, offset, 1000) == blob[offset:offset + 1000]
                assert transport.stat(path).size == len(blob)
            assert transport.list(posixpath.dirname(path)).count("big.bin") == 1


def test_ftp_transfer_threads_each_take_a_connection(ftp_server, blob):
    (ftp_server.root / "shared.bin").write_bytes(blob)
    with ftp_transports(ftp_server, ftp_server.ftps_url, ca_file=str(ftp_server.ca_file)) as transports:
        transport, path = transports.for_url(ftp_server.ftps_url + "shared.bin")
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            pieces = list(pool.map(lambda i: read(transport, path, i * MiB, MiB), range(5)))
    assert b"".join(pieces) == blob


def test_a_password_over_plain_ftp_to_another_machine_is_warned_about_once(caplog):
    from dd.transfer import Endpoint, ftp
    for host in ("127.0.0.1", "::1", "localhost", "192.0.2.7", "192.0.2.7", "files.example.org"):
        ftp._warn_clear(Endpoint("ftp", host, None, "ann"))
    warned = [record.getMessage() for record in caplog.records]
    assert warned == [f"ftp://ann@{host}: the password goes in clear over ftp; use ftps where the server "
                      "offers it" for host in ("192.0.2.7", "files.example.org")]


@pytest.mark.parametrize("url, message", [
    ("gopher://example.org/a%20b", "gopher://example.org/a%20b: unsupported URL scheme 'gopher' "
                                   "(use one of: file, http, https, sftp, ftp, ftps)"),
    ("http://example.org:http/x", "http://example.org/x: Port could not be cast"),
    ("sftp://u:pw@example.org/a#b", "sftp://u@example.org/a: URL has a query or fragment"),
])
def test_bad_urls_are_named_without_passwords(url, message):
    with pytest.raises(TransferError) as raised:
        Transports().for_url(url)
    assert str(raised.value).startswith(message)
    assert raised.value.retryable is False


# --- the copy loop


class ReadOnly:
    """A source without readinto."""

    def __init__(self, data, delay=0.0):
        self._stream = io.BytesIO(data)
        self._delay = delay

    def read(self, n):
        time.sleep(self._delay)
        return self._stream.read(n)


def test_copy_from_a_source_without_readinto():
    out = io.BytesIO()
    result = copy(ReadOnly(b"x" * 3000), out, hasher=checksum.new("md5"), chunk_size=1024)
    assert out.getvalue() == b"x" * 3000
    assert result == CopyResult(3000, hashlib.md5(b"x" * 3000).hexdigest())


class Trickle(io.BytesIO):
    """A destination that, like an unbuffered file may, writes part of what it is given."""

    def write(self, data):
        return super().write(data[:100])


def test_copy_writes_everything_to_a_destination_taking_parts():
    out = Trickle()
    copy(io.BytesIO(bytes(range(256)) * 10), out, chunk_size=1000)
    assert out.getvalue() == bytes(range(256)) * 10


@pytest.mark.parametrize("data, message", [(b"12345", "ended after 5 of 10 bytes"),
                                           (b"123456789012", "more than the 10 bytes")])
def test_copy_refuses_a_length_mismatch(data, message):
    with pytest.raises(TransferError, match=message):
        copy(io.BytesIO(data), io.BytesIO(), length=10, name="the source")


def test_copy_keeps_to_rate_max_and_ticks_while_waiting():
    ticks = []
    start = time.monotonic()
    result = copy(io.BytesIO(bytes(3 * MiB // 2)), io.BytesIO(), rate_max=MiB,
                  tick=lambda: ticks.append(time.monotonic()))
    elapsed = time.monotonic() - start
    assert result.nbytes == 3 * MiB // 2
    assert 1.5 * 0.9 < elapsed < 1.5 * 1.1
    assert len(ticks) >= 2


def test_copy_ticks_during_a_slow_source_but_not_too_often():
    ticks = []
    start = time.monotonic()
    copy(ReadOnly(bytes(24), delay=0.05), io.BytesIO(), chunk_size=1,
         tick=lambda: ticks.append(time.monotonic()))
    assert 2 <= len(ticks) <= 3
    intervals = [b - a for a, b in zip([start] + ticks, ticks)]
    assert min(intervals) >= 0.45


class Uneven(io.BytesIO):
    """A source whose reads return big and small pieces in turn, as a socket may."""

    def __init__(self, data):
        super().__init__(data)
        self.sizes = itertools.cycle([MiB, 1000, MiB, MiB, 300 << 10, 5])

    def readinto(self, buffer):
        return super().readinto(memoryview(buffer)[:next(self.sizes)])


def test_copy_keeps_the_order_of_big_and_small_pieces_for_the_file_and_every_hasher():
    # Big pieces are hashed and written on lanes of their own, a ring of buffers ahead of
    # them; small ones in place, after the big ones before them.
    data = os.urandom(12 * MiB + 7)
    out, whole, also = io.BytesIO(), checksum.new("sha256"), checksum.new("md5")
    result = copy(Uneven(data), out, length=len(data), hasher=whole, also_hash=[also])
    assert out.getvalue() == data
    assert result == CopyResult(len(data), hashlib.sha256(data).hexdigest())
    assert also.hexdigest() == hashlib.md5(data).hexdigest()


class FullDisk(io.BytesIO):
    """A destination that runs out of space after 2 MiB."""

    def write(self, data):
        if self.tell() >= 2 * MiB:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_copy_stops_at_a_failed_write_of_a_big_chunk(blob):
    # Big chunks are written on a lane of their own while the next are read: the error still ends the copy.
    out = FullDisk()
    with pytest.raises(OSError, match="No space left"):
        copy(io.BytesIO(blob), out, length=len(blob), hasher=checksum.new("sha512"))
    assert out.getvalue() == blob[:2 * MiB]
