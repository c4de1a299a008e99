"""http: and https: URLs: read and stat (HEAD) over a keep-alive connection pool per server.

urllib3 directly, not requests: for small files the per-request cost of requests
(hooks, cookie jars, environment merging) was most of the time spent per file.
"""
import email.utils
import io
import re
import urllib.parse
import urllib.request

import urllib3

from dd.errors import TransferError
from dd.transfer import Capabilities, DeniedError, PermanentError, ReadStream, Stat, Transport

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(?:\d+|\*)")
# Statuses where the same request may succeed later (416: the file may still be growing).
_TRANSIENT_STATUSES = {408, 416, 425, 429}
#: Connections kept per server: one per transfer thread is plenty.
POOL_SIZE = 16


class _Body(io.RawIOBase):
    """A response body; closing it hands a fully read connection back to the pool."""

    def __init__(self, response):
        super().__init__()
        self._response = response

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._response.readinto(buffer)

    def close(self):
        if not self.closed:
            if self._response.isclosed() or self._response.length_remaining == 0:
                self._response.release_conn()
            else:  # abandoned part-way: the connection is in an unknown state
                self._response.close()
        super().close()


class HttpTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=False, stat=True, list=False,
                                delete=False, rename=False)

    def __init__(self, endpoint, *, password=None, timeout=30.0, verify=True):
        """`verify`: check the server's certificate (True), against a CA bundle (path), or not."""
        super().__init__(endpoint, password=password, timeout=timeout)
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        port = f":{endpoint.port}" if endpoint.port else ""
        self._base = f"{endpoint.scheme}://{host}{port}"
        self._headers = {"Accept-Encoding": "identity"}
        if endpoint.user:
            self._headers.update(urllib3.make_headers(basic_auth=f"{endpoint.user}:{password or ''}"))
        tls = {}
        if endpoint.scheme == "https":
            tls = {"cert_reqs": "CERT_REQUIRED" if verify else "CERT_NONE"}
            if isinstance(verify, str):
                tls["ca_certs"] = verify
        options = dict(num_pools=1, maxsize=POOL_SIZE, retries=False,
                       timeout=urllib3.Timeout(connect=timeout, read=timeout), **tls)
        proxy = _proxy_for(endpoint)
        self._pool = urllib3.ProxyManager(proxy, **options) if proxy else urllib3.PoolManager(**options)

    def open_read(self, path, offset=0, length=None):
        where = self.endpoint.url(path)
        if length == 0:
            # An empty range cannot be asked for; HEAD still checks that the file is there.
            self._request("HEAD", path, {}).release_conn()
            return ReadStream(io.BytesIO(), 0, where)
        headers = {}
        ranged = offset > 0 or length is not None
        if ranged:
            last = "" if length is None else offset + length - 1
            headers["Range"] = f"bytes={offset}-{last}"
        response = self._request("GET", path, headers)
        try:
            expected = _body_length(response, offset, length, where) if ranged else _size(response)
        except TransferError:
            response.close()
            raise
        return ReadStream(_Body(response), expected, where, transient=(urllib3.exceptions.HTTPError,))

    def stat(self, path):
        response = self._request("HEAD", path, {})
        response.release_conn()
        modified = response.headers.get("Last-Modified")
        mtime = email.utils.parsedate_to_datetime(modified).timestamp() if modified else None
        return Stat(_size(response), mtime)

    def close(self):
        self._pool.clear()

    def _request(self, method, path, headers):
        where = self.endpoint.url(path)
        url = self._base + urllib.parse.quote(path or "/")
        try:
            response = self._pool.request(method, url, headers={**self._headers, **headers},
                                          preload_content=False, redirect=True)
        except urllib3.exceptions.SSLError as error:
            raise PermanentError(f"{where}: TLS failed: {_innermost(error)}",
                                 fix="check the server certificate, or give its CA bundle as "
                                     "the https 'verify' option") from error
        except urllib3.exceptions.NewConnectionError as error:  # before TimeoutError: a subclass
            raise TransferError(f"{where}: {_innermost(error)}") from error
        except urllib3.exceptions.TimeoutError as error:
            raise TransferError(f"{where}: no answer within {self.timeout:g} s") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise TransferError(f"{where}: {_innermost(error)}") from error
        if response.status >= 400:
            response.drain_conn()
            response.release_conn()
            status = response.status
            if status in (401, 403):
                raise DeniedError(f"{where}: HTTP {status} {response.reason}",
                                  fix="check this server's password in credentials.conf; private data is "
                                      "served to its readers only")
            transient = status >= 500 or status in _TRANSIENT_STATUSES
            raise (TransferError if transient else PermanentError)(
                f"{where}: HTTP {status} {response.reason}")
        return response


def _proxy_for(endpoint):
    """The proxy the environment (http_proxy, https_proxy, no_proxy) names for this server."""
    proxies = urllib.request.getproxies()
    proxy = proxies.get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(endpoint.host):
        return proxy
    return None


def _size(response):
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _body_length(response, offset, length, where):
    """How many bytes the answer to a range request must have; a different range is an error."""
    if response.status == 206:
        content_range = response.headers.get("Content-Range", "")
        match = _CONTENT_RANGE.fullmatch(content_range)
        first, last = (int(match[1]), int(match[2])) if match else (None, None)
        if first == offset and (length is None or last == offset + length - 1):
            return last - first + 1
        asked = f"{offset}-{'' if length is None else offset + length - 1}"
        raise TransferError(f"{where}: asked for bytes {asked}, server sent {content_range!r}",
                            fix="the file is shorter than announced; it may be changing")
    if offset == 0 and _size(response) == length:
        return length
    raise PermanentError(f"{where}: server ignored the byte range asked for",
                         fix="the server does not support ranges; fetch whole files")


def _innermost(error):
    """The root cause's message: urllib3 wraps it in layers of pool and retry text."""
    while error.__context__ is not None or error.__cause__ is not None:
        error = error.__cause__ or error.__context__
    return getattr(error, "strerror", None) or str(error)
