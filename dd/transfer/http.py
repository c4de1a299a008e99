"""http: and https: URLs: read and stat (HEAD) over keep-alive connections to one server.

The standard library's http.client, not urllib3 or requests: for small files the
per-request work of those layers (pool keys, header dict copies, response
wrappers) cost twice the CPU of the request itself (0.30 against 0.14 ms a file),
and a subscriber spends most of its time on small files.

A password goes only with the requests that need it, never with a public file's:
those for a dd data server's private area (/private/<readers>/, where the pump
asks for its readers' passwords), those to a directory that asked before, and
the one repeat of a request the server answered 401 without it.  Each is sent
only below the path its credentials.conf line names, and never after a redirect
(redirects are not followed).
"""
from __future__ import annotations

import base64
import email.utils
import http.client
import io
import re
import socket
import ssl
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Protocol

from dd.core.credentials import Url, url_host, within
from dd.core.errors import CERTIFICATE_FIX, TransferError
from dd.transfer import (
    Capabilities,
    DeniedError,
    Endpoint,
    Entry,
    OneAtATime,
    PermanentError,
    RangeIgnored,
    RangeReader,
    ReadStream,
    Stat,
    Transport,
    failures,
)
from dd.transfer import autoindex
from dd.transfer.pool import Idle, closed_by_server

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

#: The largest directory listing read (about 100 bytes an entry).
LISTING_LIMIT = 64 << 20
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(?:\d+|\*)")
# Statuses where the same request may succeed later (a range not satisfiable: the file may still be growing).
_TRANSIENT_STATUSES = {HTTPStatus.REQUEST_TIMEOUT, HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE,
                       HTTPStatus.TOO_EARLY, HTTPStatus.TOO_MANY_REQUESTS}
# A kept connection the server closed in the meantime fails like this on its next request:
# the request never reached the server, so it is sent again, once, on a new connection.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
# Where a dd data server asks for a password (dd.pump.private, dd.pump.nginx).
_PRIVATE = re.compile(r"/private/[^/]+/")
#: Directories remembered per server as asking for a password.  RFC 7617 (2.2) lets a
#: client take everything below the directory of a URL that asked as asking too, as
#: browsers do: a server that protects everything then costs one 401 per directory instead
#: of one per file.  Bounded, oldest forgotten first, so an endless tree cannot grow it; a
#: forgotten directory only costs its 401 again.
ASKED_LIMIT = 64


def _usable(connection: http.client.HTTPConnection) -> bool:
    # Without a socket, http.client connects again by itself.
    return connection.sock is None or not closed_by_server(connection.sock)


class _Connections(Protocol):
    """Where a request takes its connection from and its fully read body gives it back to:
    the transport's pool (Idle), or a pipeline's one connection."""

    def take(self) -> tuple[http.client.HTTPConnection, bool]: ...

    def give_back(self, connection: http.client.HTTPConnection) -> None: ...


class _Body(io.RawIOBase):
    """A response body; closing it hands a fully read connection back for the next request."""

    def __init__(self, response: http.client.HTTPResponse, connection: http.client.HTTPConnection,
                 connections: _Connections) -> None:
        super().__init__()
        self._response = response
        self._connection = connection
        self._connections = connections

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        return self._response.readinto(buffer)

    def close(self) -> None:
        if not self.closed:
            if self._response.isclosed():
                self._connections.give_back(self._connection)
            else:  # abandoned part-way: the connection is in an unknown state
                self._response.close()
                self._connection.close()
        super().close()


class HttpTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=False, stat=True, list=False,
                                delete=False, rename=False, entries=True)
    per_request_credentials = True
    concurrent_reads = True

    def __init__(self, endpoint: Endpoint, *, credentials: Iterable[Url] = (), timeout: float = 30.0,
                 verify: bool | str = True) -> None:
        """`credentials`: dd.core.credentials Urls for this server, the deepest path first.
        `verify`: check the server's certificate (True), against a CA bundle (path), or not."""
        super().__init__(endpoint, timeout=timeout)
        host = url_host(endpoint.host)
        port = f":{endpoint.port}" if endpoint.port else ""
        self._headers = {"Accept-Encoding": "identity"}
        # (directory, Authorization header) of each credential.
        self._keys = tuple((credential.scope, _basic(credential.user, credential.password))
                           for credential in credentials)
        self._asked: tuple[str, ...] = ()   # directories that asked for a password, oldest first
        self._asked_lock = threading.Lock()
        self._tls = _tls_context(verify) if endpoint.scheme == "https" else None
        self._proxy = _proxy_for(endpoint)
        # Through an http proxy, requests name the whole URL; through https ones, a tunnel.
        self._target_prefix = f"http://{host}{port}" if self._proxy and not self._tls else ""
        self._connections: Idle[http.client.HTTPConnection] = Idle(self._connect, _usable,
                                                                   http.client.HTTPConnection.close)

    def _connect(self) -> http.client.HTTPConnection:
        endpoint, timeout = self.endpoint, self.timeout
        if self._proxy:
            proxy = urllib.parse.urlsplit(self._proxy)
            if proxy.hostname is None:  # never quoted: a proxy URL may hold a password
                raise TransferError(f"{endpoint.url()}: the proxy the environment names has no host",
                                    fix="write http_proxy and https_proxy as http://host:port")
            if self._tls:
                connection = http.client.HTTPSConnection(proxy.hostname, proxy.port or 80, timeout=timeout,
                                                         context=self._tls)
                connection.set_tunnel(endpoint.host, endpoint.port or 443)
                return connection
            return http.client.HTTPConnection(proxy.hostname, proxy.port or 80, timeout=timeout)
        if self._tls:
            return http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=timeout, context=self._tls)
        return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)

    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> ReadStream:
        return self._open_read(path, offset, length, self._connections)

    def range_reader(self, path: str) -> RangeReader:
        # A proxy in between may not keep pipelined answers apart: one range at a time there.
        return OneAtATime(self, path) if self._proxy else _Pipeline(self, path)

    def _open_read(self, path: str, offset: int, length: int | None, connections: _Connections) -> ReadStream:
        where = self.endpoint.url(path)
        if length == 0:
            # An empty range cannot be asked for; HEAD still checks that the file is there.
            self._finish(*self._request("HEAD", path, {}, connections), connections)
            return ReadStream(io.BytesIO(), 0, where)
        headers = _range(offset, length) if _ranged(offset, length) else {}
        response, connection = self._request("GET", path, headers, connections)
        return self._body(response, connection, connections, offset, length, where)

    def _body(self, response: http.client.HTTPResponse, connection: http.client.HTTPConnection,
              connections: _Connections, offset: int, length: int | None, where: str) -> ReadStream:
        """The stream of a 2xx response; a range other than the one asked for is an error."""
        try:
            ranged = _ranged(offset, length)
            expected = _body_length(response, offset, length, where) if ranged else _size(response)
        except TransferError:
            response.close()
            connection.close()
            raise
        return ReadStream(_Body(response, connection, connections), expected, where,
                          transient=(http.client.HTTPException,))

    def stat(self, path: str) -> Stat:
        response, connection = self._request("HEAD", path, {})
        self._finish(response, connection)
        modified = response.getheader("Last-Modified")
        mtime = email.utils.parsedate_to_datetime(modified).timestamp() if modified else None
        return Stat(_size(response), mtime)

    def entries(self, path: str) -> list[Entry]:
        """The entries of the directory's autoindex page (dd.transfer.autoindex)."""
        directory = path if path.endswith("/") else path + "/"
        where = self.endpoint.url(directory)
        response, connection = self._request("GET", directory, {})
        try:
            with failures(where, (http.client.HTTPException,)):
                page = response.read(LISTING_LIMIT + 1)
        finally:
            response.close()
            connection.close()
        if len(page) > LISTING_LIMIT:
            raise PermanentError(f"{where}: listing larger than {LISTING_LIMIT >> 20} MiB",
                                 fix="poll smaller directories")
        charset = response.headers.get_content_charset() or "utf-8"
        return autoindex.parse(page.decode(charset, "replace"), directory)

    def close(self) -> None:
        self._connections.close()

    def _finish(self, response: http.client.HTTPResponse, connection: http.client.HTTPConnection,
                connections: _Connections | None = None) -> None:
        """Read what is left of a response we do not need, so its connection can serve again."""
        try:
            response.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            return
        (connections or self._connections).give_back(connection)

    def _request(self, method: str, path: str, headers: dict[str, str], connections: _Connections | None = None
                 ) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """(response, connection) of a successful request; failures are TransferErrors."""
        connections = connections or self._connections
        where = self.endpoint.url(path)
        target = self._target(path)
        authorization = self._authorization(path) if self._keys else None
        response, connection = self._send(method, target, headers, authorization, where, connections)
        if response.status == HTTPStatus.UNAUTHORIZED and authorization is None and self._keys:
            authorization = self._authorization(path, asked=True)
            if authorization is not None:
                self._finish(response, connection, connections)
                self._remember(path)
                response, connection = self._send(method, target, headers, authorization, where, connections)
        status = response.status
        if status < HTTPStatus.MULTIPLE_CHOICES:      # 2xx
            return response, connection
        self._finish(response, connection, connections)
        if status < HTTPStatus.BAD_REQUEST:           # 3xx: a redirect, not followed
            raise PermanentError(f"{where}: HTTP {status} {response.reason}, to "
                                 f"{response.getheader('Location', 'nowhere')!r}",
                                 fix="announce the URL the server sends readers to")
        if status == HTTPStatus.UNAUTHORIZED and authorization is None:
            raise DeniedError(f"{where}: HTTP 401 {response.reason}",
                              fix="no password in credentials.conf is for this URL: add a line with "
                                  "its scheme, host, port and a directory above it")
        if status in (HTTPStatus.UNAUTHORIZED, HTTPStatus.FORBIDDEN):
            raise DeniedError(f"{where}: HTTP {status} {response.reason}",
                              fix="check this server's password in credentials.conf; private data is "
                                  "served to its readers only")
        transient = status >= HTTPStatus.INTERNAL_SERVER_ERROR or status in _TRANSIENT_STATUSES
        raise (TransferError if transient else PermanentError)(f"{where}: HTTP {status} {response.reason}")

    def _authorization(self, path: str, asked: bool = False) -> str | None:
        """The Authorization header for `path` when it needs one (the server `asked`, a private
        area, a directory that asked before) and a credential's scope holds it; else None."""
        if not (asked or path.startswith(self._asked) or ("/private/" in path and _PRIVATE.search(path))):
            return None
        return next((header for scope, header in self._keys if within(path, scope)), None)

    def _remember(self, path: str) -> None:
        """Remember that the directory of `path` asks for a password (see ASKED_LIMIT)."""
        directory = path[:path.rfind("/") + 1]
        with self._asked_lock:
            kept = [asked for asked in self._asked if asked != directory][-(ASKED_LIMIT - 1):]
            self._asked = (*kept, directory)

    def _target(self, path: str) -> str:
        return self._target_prefix + urllib.parse.quote(path or "/")

    def _headers_with(self, headers: dict[str, str], authorization: str | None) -> dict[str, str]:
        headers = {**self._headers, **headers}
        if authorization is not None:
            headers["Authorization"] = authorization
        return headers

    def _send(self, method: str, target: str, headers: dict[str, str], authorization: str | None,
              where: str, connections: _Connections) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """(response, connection) of one request, whatever its status; failures are TransferErrors."""
        headers = self._headers_with(headers, authorization)
        while True:
            connection, reused = connections.take()
            try:
                connection.request(method, target, headers=headers)
                response = connection.getresponse()
                break
            except _STALE as error:
                connection.close()
                if not reused:
                    raise TransferError(f"{where}: {_reason(error)}") from error
            except ssl.SSLError as error:  # before OSError: a subclass
                connection.close()
                fix = (CERTIFICATE_FIX if isinstance(error, ssl.SSLCertVerificationError)
                       else "check that the server speaks TLS on this port")
                raise PermanentError(f"{where}: TLS failed: {_reason(error)}", fix=fix) from error
            except TimeoutError as error:  # before OSError: a subclass
                connection.close()
                raise TransferError(f"{where}: no answer within {self.timeout:g} s") from error
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                raise TransferError(f"{where}: {_reason(error)}") from error
        return response, connection


class _WholeAnswer(http.client.HTTPResponse):
    """A response that reads nothing past its own end.  On a pipelined connection the next
    answer is already arriving behind it, and http.client's reader, buffered 8 KiB at a time,
    would take that answer's first bytes with this one's last.  Headers are read a byte a
    call, which costs nothing beside a piece of 4 MiB or more."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.fp.close()
        self.fp = sock.makefile("rb", buffering=1)


class _Pipeline:
    """A RangeReader with a connection of its own, on which the next range is asked for while
    the last is still arriving (HTTP/1.1 pipelining, RFC 9112 section 9.3.2): a stream on a
    long round trip loses no round trip between pieces, with no more connections than
    streams.  Only a 2xx answer is taken from the pipeline; after anything else, or a broken
    connection, the range is asked for again the ordinary way, which says what is wrong."""

    def __init__(self, transport: HttpTransport, path: str) -> None:
        self._transport = transport
        self._path = path
        self._connection: http.client.HTTPConnection | None = None
        self._asked: tuple[int, int] | None = None   # sent on the connection, its answer not read yet

    def ask(self, offset: int, length: int) -> None:
        connection = self._connection
        # No socket: the server said it closes the connection after the answer being read.
        if connection is None or connection.sock is None or self._asked is not None:
            return
        transport = self._transport
        headers = transport._headers_with(_range(offset, length),
                                          transport._authorization(self._path) if transport._keys else None)
        try:
            connection.request("GET", transport._target(self._path), headers=headers)
        except (OSError, http.client.HTTPException):
            self._drop()
            return
        self._asked = (offset, length)

    def open(self, offset: int, length: int) -> ReadStream:
        if self._asked == (offset, length):
            stream = self._answer(offset, length)
            if stream is not None:
                return stream
        return self._transport._open_read(self._path, offset, length, self)

    def _answer(self, offset: int, length: int) -> ReadStream | None:
        """The pipelined answer to the range asked for, if it is a good one."""
        connection = self._connection
        assert connection is not None
        self._asked = None
        try:
            response = connection.getresponse()
        except (OSError, http.client.HTTPException):
            self._drop()
            return None
        if not HTTPStatus.OK <= response.status < HTTPStatus.MULTIPLE_CHOICES:
            response.close()
            self._drop()
            return None
        return self._transport._body(response, connection, self, offset, length,
                                     self._transport.endpoint.url(self._path))

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        connection = self._connection
        # Without a socket it would connect again by itself, and pass for one that served.
        if connection is not None and connection.sock is not None and self._asked is None and _usable(connection):
            return connection, True
        self._drop()   # an answer still to come on it would be taken for the next one's
        connection = self._transport._connect()
        connection.response_class = _WholeAnswer
        self._connection = connection
        return connection, False

    def give_back(self, connection: http.client.HTTPConnection) -> None:
        if connection is not self._connection:
            connection.close()

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        if self._connection is not None:
            self._connection.close()
        self._connection, self._asked = None, None


def _ranged(offset: int, length: int | None) -> bool:
    """Whether a read asks for part of the file rather than all of it."""
    return offset > 0 or length is not None


def _range(offset: int, length: int | None) -> dict[str, str]:
    return {"Range": f"bytes={offset}-{'' if length is None else offset + length - 1}"}


def _basic(user: str | None, password: str | None) -> str:
    """An Authorization header of the Basic scheme (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user or ''}:{password or ''}".encode()).decode()


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _proxy_for(endpoint: Endpoint) -> str | None:
    """The proxy the environment (http_proxy, https_proxy, no_proxy) names for this server."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.host):
        return proxy
    return None


def _size(response: http.client.HTTPResponse) -> int | None:
    length = response.getheader("Content-Length")
    return int(length) if length is not None else None


def _body_length(response: http.client.HTTPResponse, offset: int, length: int | None, where: str) -> int | None:
    """How many bytes the answer to a range request must have; a different range is an error."""
    if response.status == HTTPStatus.PARTIAL_CONTENT:
        content_range = response.getheader("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range)
        first, last = (int(match[1]), int(match[2])) if match else (None, None)
        if first == offset and last is not None and (length is None or last == offset + length - 1):
            return last - first + 1
        asked = f"{offset}-{'' if length is None else offset + length - 1}"
        raise TransferError(f"{where}: asked for bytes {asked}, server sent {content_range!r}",
                            fix="the file is shorter than announced; it may be changing")
    if offset == 0 and _size(response) == length:
        return length
    raise RangeIgnored(f"{where}: server ignored the byte range asked for",
                         fix="the server does not support ranges; fetch whole files")


def _reason(error: BaseException) -> str:
    """What went wrong, in the words of the system where it has them."""
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or str(error) \
        or type(error).__name__
