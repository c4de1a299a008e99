"""Transports: one small interface per URL scheme, a pool of connected ones.

A Transport serves one server (scheme, host, port, user).  What it can do is
stated by its ``capabilities``; an operation whose flag is False is not offered
at all (the method does not exist), so callers check flags instead of catching
NotImplementedError.  Paths are decoded URL paths (str); the transport quotes
them as its protocol needs.  Every failure is a TransferError whose
``retryable`` says whether trying again may help.
"""
import abc
import contextlib
import dataclasses
import importlib
import io
import posixpath
import re
import secrets
import stat
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Optional, Protocol

from dd.core.credentials import DEFAULT_PORTS, Credentials, Url, url_host
from dd.core.errors import TransferError
from dd.core.outcome import Code

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from dd.transfer.copy import CopyResult

_TEMPORARY = re.compile(r"\..+\.(?:[0-9a-f]{8}|dd)\.tmp", re.DOTALL)
#: The tag of the temporary file a receiver writes a whole file to (dd.delivery.receive).
WRITING = "dd.tmp"


class PermanentError(TransferError):
    """A failure that trying again will not fix: missing file, bad URL, unknown host key."""

    retryable = False
    code = Code.NOT_FOUND


class RangeIgnored(PermanentError):
    """The server answered a byte range with the whole file: ask for the whole file instead."""

    rule = "range"


class DeniedError(PermanentError):
    """The server refused us: a wrong password, or private data we are not a reader of."""

    rule = "denied"
    code = Code.DENIED


@dataclasses.dataclass(frozen=True)
class Capabilities:
    ranged_read: bool
    write: bool
    stat: bool
    list: bool
    delete: bool
    rename: bool
    entries: bool


@dataclasses.dataclass(frozen=True)
class Stat:
    size: Optional[int]
    mtime: Optional[float]   # seconds since the epoch


@dataclasses.dataclass(frozen=True)
class Entry:
    """One entry of a directory listing (``entries``): a file or a directory below it.
    Size and mtime are None where the listing does not say them exactly."""

    name: str
    directory: bool
    size: Optional[int] = None
    mtime: Optional[float] = None   # seconds since the epoch


def entry_of(name: str, mode: int, size: Optional[int], mtime: Optional[float]) -> Optional[Entry]:
    """The Entry of a file or directory with this (lstat) mode; None for links and every
    other kind of file, which a listing leaves out."""
    if stat.S_ISDIR(mode):
        return Entry(name, True, None, mtime)
    if stat.S_ISREG(mode):
        return Entry(name, False, size, mtime)
    return None


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where a transport connects; the pool key.  Holds no password, so it is safe to print."""

    scheme: str
    host: str
    port: Optional[int]
    user: Optional[str]

    def url(self, path: str = "") -> str:
        user = f"{urllib.parse.quote(self.user, safe='')}@" if self.user else ""
        host = url_host(self.host)
        port = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{user}{host}{port}{urllib.parse.quote(path)}"


class Transport(abc.ABC):
    """A connection to one server.  Optional operations, present only when
    ``capabilities`` says so: ``write(path, stream, **copy_options) -> CopyResult``
    (to a temporary name, then renamed; missing directories are made),
    ``list(path) -> [names]``, ``delete(path)``, ``rename(old, new)``,
    ``stat(path) -> Stat``, ``entries(path) -> [Entry]`` (the files and directories of a
    directory, with their sizes and mtimes, sorted by name; symbolic links and other kinds
    of file are left out, so a walk never leaves the tree).  ``write``'s
    ``check(temporary, result)``, when given, is called once the data is on the server under
    its temporary name: what it raises (a size or a checksum found wrong) removes the file
    instead of renaming it into place.

    How it is given passwords: with ``per_request_credentials`` False, one login for the
    whole server (``password``, for the endpoint's user); True, every credential for its
    server (``credentials``, dd.core.credentials Urls, the deepest path first), each to be sent
    only with requests for paths below its own."""

    capabilities: Capabilities
    per_request_credentials = False
    #: Whether several threads may read through this transport at once, each on a
    #: connection of its own (dd.delivery.ranges).
    concurrent_reads = False

    def __init__(self, endpoint: Endpoint, *, password: Optional[str] = None, timeout: float = 30.0) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._password = password

    @abc.abstractmethod
    def open_read(self, path: str, offset: int = 0, length: Optional[int] = None) -> "ReadStream":
        """A readable binary stream of the file, or of exactly `length` bytes from `offset`."""

    def range_reader(self, path: str) -> "RangeReader":
        """What one thread reads byte ranges of `path` with, one after the other (dd.delivery.ranges)."""
        return OneAtATime(self, path)

    @abc.abstractmethod
    def close(self) -> None:
        """Disconnect; never raises."""


class RangeReader(Protocol):
    """One thread's byte-range reads of one file, opened one after the other, each stream
    closed before the next is opened."""

    def ask(self, offset: int, length: int) -> None:
        """Say that ``open(offset, length)`` comes next: a transport that can ask for it while
        the last range is still arriving (HTTP pipelining) loses no round trip between the
        two.  Only a hint: opening another range instead is always right."""

    def open(self, offset: int, length: int) -> "ReadStream": ...

    def close(self) -> None: ...


class OneAtATime:
    """The RangeReader of a transport that cannot ask ahead: each range asked for when opened."""

    def __init__(self, transport: Transport, path: str) -> None:
        self._transport = transport
        self._path = path

    def ask(self, offset: int, length: int) -> None:
        pass

    def open(self, offset: int, length: int) -> "ReadStream":
        return self._transport.open_read(self._path, offset, length)

    def close(self) -> None:
        pass


#: What write calls before the rename: (temporary path, what the copy did); raises to stop it.
Check = Callable[[str, "CopyResult"], None]


#: Exceptions of a library that mean a transfer failed and may succeed if tried again.
Transient = tuple[type[BaseException], ...]


@contextlib.contextmanager
def failures(where: str, transient: Transient = ()) -> Iterator[None]:
    """Turn OS and library errors into TransferErrors that name `where`."""
    retryable: Transient = (OSError, *transient)
    try:
        yield
    except TransferError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError) as error:
        raise PermanentError(f"{where}: {error.strerror or error}") from error
    except UnicodeDecodeError as error:
        # A server's listing naming a file in another encoding (Latin-1): its line, escaped.
        text = bytes(error.object)
        line = text[text.rfind(b"\n", 0, error.start) + 1:].split(b"\n", 1)[0].strip()
        raise PermanentError(f"{where}: a name there is not UTF-8 ({line[:160]!r})",
                             fix="rename it in UTF-8 on the server") from error
    except retryable as error:
        raise TransferError(f"{where}: {getattr(error, 'strerror', None) or error}") from error


class RawReader(Protocol):
    """What ReadStream reads from: an unbuffered binary file, a response body, ..."""

    def readinto(self, buffer: memoryview, /) -> Optional[int]: ...

    def close(self) -> None: ...


class ReadStream(io.RawIOBase):
    """A source stream that delivers exactly `length` bytes when length is known:
    ending early is a TransferError and bytes past `length` are never read."""

    def __init__(self, raw: RawReader, length: Optional[int], where: str, transient: Transient = ()) -> None:
        super().__init__()
        self._raw = raw
        self._length = length
        self._done = 0
        self._where = where
        self._transient = transient

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: "WriteableBuffer") -> Optional[int]:
        view = memoryview(buffer)
        want = len(view) if self._length is None else min(len(view), self._length - self._done)
        if want == 0:
            return 0
        with failures(self._where, self._transient):
            n = self._raw.readinto(view[:want])
        if not n and self._length is not None:
            raise TransferError(f"{self._where}: ended after {self._done} of {self._length} bytes",
                                fix="the file is shorter than announced; it may be changing")
        self._done += n or 0
        return n

    def close(self) -> None:
        if not self.closed:
            with failures(self._where, self._transient):
                self._raw.close()
        super().close()


def temporary_name(path: str, tag: Optional[str] = None) -> str:
    """A hidden name beside `path` to write to before renaming: readers never see partial files.
    `tag` (at most 40 characters) makes it a known name instead of a random one.
    The name is cut so the result stays within the 255-byte limit of a file name."""
    directory, name = posixpath.split(path)
    short = name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")
    return posixpath.join(directory, f".{short}.{secrets.token_hex(4) + '.tmp' if tag is None else tag}")


@contextlib.contextmanager
def replacing(path: str, rename: Callable[[str, str], object], remove: Callable[[str], object],
              ignore: Transient = ()) -> Iterator[str]:
    """The temporary name to write `path` to: renamed to `path` when the block succeeds,
    removed when it fails (errors of that removal, and `ignore`'s, are not what went wrong)."""
    temporary = temporary_name(path)
    try:
        yield temporary
        rename(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError, *ignore):
            remove(temporary)
        raise


def make_directories(directory: str, is_directory: Callable[[str], bool], mkdir: Callable[[str], object]) -> None:
    """Make `directory` and its missing parents over a protocol, the topmost first."""
    missing = []
    while directory not in ("", "/") and not is_directory(directory):
        missing.append(directory)
        directory = posixpath.dirname(directory)
    for each in reversed(missing):
        mkdir(each)


def is_temporary_name(name: str) -> bool:
    """Whether a file name is one temporary_name makes (a partial file, never announced)."""
    return _TEMPORARY.fullmatch(name) is not None


class Transports:
    """A pool of connected transports, one per (scheme, host, port, user) a URL names.

    `credentials` (dd.core.credentials.Credentials) gives the passwords for a URL that carries
    none (and the user, where the URL names none);
    `options` maps a scheme to keyword options of its transport, e.g.
    ``{"sftp": {"known_hosts": path, "key_filename": path}, "https": {"verify": ca_path},
    "ftps": {"ca_file": ca_path}}``.
    """

    def __init__(self, credentials: Optional[Credentials] = None, timeout: float = 30.0,
                 options: Optional[Mapping[str, Mapping[str, Any]]] = None) -> None:
        self._credentials = credentials
        self._timeout = timeout
        self._options = options or {}
        self._pool: dict[tuple[Endpoint, Optional[str]], Transport] = {}

    def for_url(self, url: str) -> tuple[Transport, str]:
        """(transport, decoded path) for a percent-encoded URL."""
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        path = urllib.parse.unquote(parts.path)
        try:
            port = parts.port
        except ValueError as error:
            raise PermanentError(f"{scheme}://{parts.hostname}{path}: {error}") from None
        endpoint = Endpoint(scheme, parts.hostname or "", port,
                            urllib.parse.unquote(parts.username) if parts.username else None)
        if scheme not in SCHEMES:
            raise PermanentError(f"{endpoint.url(path)}: unsupported URL scheme {scheme!r}",
                                 fix=f"use one of: {', '.join(SCHEMES)}")
        if parts.query or parts.fragment:
            raise PermanentError(f"{endpoint.url(path)}: URL has a query or fragment",
                                 fix="percent-encode '?' and '#' in paths as %3F and %23")
        password = urllib.parse.unquote(parts.password) if parts.password else None
        # A URL's own password makes a transport of its own: it never goes with other URLs.
        transport = self._pool.get((endpoint, password))
        if transport is None:
            transport = self._pool[endpoint, password] = self._open(endpoint, password)
        return transport, path

    def _open(self, endpoint: Endpoint, password: Optional[str]) -> Transport:
        """A transport for the server `endpoint` names, with the credentials for it: the
        URL's own password, for that whole server, else the entries of credentials.conf."""
        scheme = endpoint.scheme
        server = Url(scheme=scheme, user=endpoint.user, host=endpoint.host,
                     port=endpoint.port or DEFAULT_PORTS.get(scheme), _password=password)
        credentials: tuple[Url, ...]
        if password is not None:
            credentials = (server,)
        else:
            # A URL naming no user still gets those credentials.conf has for its server:
            # that is how a subscriber reads private data it is a reader of.
            credentials = self._credentials.for_server(server) if self._credentials else ()
        cls = transport_class(scheme)
        options: dict[str, Any] = dict(timeout=self._timeout, **self._options.get(scheme, {}))
        if cls.per_request_credentials:
            options["credentials"] = credentials
        else:
            if credentials:
                endpoint = dataclasses.replace(endpoint, user=credentials[0].user)
                password = credentials[0].password
            options["password"] = password
        return cls(endpoint, **options)

    def close(self) -> None:
        for transport in self._pool.values():
            transport.close()
        self._pool.clear()

    def __enter__(self) -> "Transports":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: The scheme table: which module and class serve each scheme.  Loaded on first
#: use, so a command that never downloads does not pay for requests and paramiko.
SCHEMES = {"file": "file:FileTransport", "http": "http:HttpTransport", "https": "http:HttpTransport",
           "sftp": "sftp:SftpTransport", "ftp": "ftp:FtpTransport", "ftps": "ftp:FtpTransport"}


def transport_class(scheme: str) -> type[Transport]:
    module, name = SCHEMES[scheme].split(":")
    cls: type[Transport] = getattr(importlib.import_module(f"dd.transfer.{module}"), name)
    return cls
