"""http: and https: URLs: read and stat (HEAD) over one keep-alive session per server."""
import email.utils
import io
import re
import urllib.parse
import urllib.request

import requests
import urllib3

from dd.errors import TransferError
from dd.transfer import Capabilities, PermanentError, ReadStream, Stat, Transport

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(?:\d+|\*)")
# Statuses where the same request may succeed later (416: the file may still be growing).
_TRANSIENT_STATUSES = {408, 416, 425, 429}


class HttpTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=False, stat=True, list=False,
                                delete=False, rename=False)

    def __init__(self, endpoint, *, password=None, timeout=30.0, verify=True):
        """`verify`: check the server's certificate (True), against a CA bundle (path), or not."""
        super().__init__(endpoint, password=password, timeout=timeout)
        self._session = requests.Session()
        # Proxy settings are read from the environment once, not on every request
        # (requests re-reads them per request, which dominates small transfers).
        self._session.proxies = urllib.request.getproxies()
        self._session.trust_env = False
        # Given per request: requests lets REQUESTS_CA_BUNDLE override Session.verify.
        self._verify = verify
        if endpoint.user:
            self._session.auth = (endpoint.user, password or "")
        host = f"[{endpoint.host}]" if ":" in endpoint.host else endpoint.host
        port = f":{endpoint.port}" if endpoint.port else ""
        self._base = f"{endpoint.scheme}://{host}{port}"

    def open_read(self, path, offset=0, length=None):
        where = self.endpoint.url(path)
        if length == 0:
            # An empty range cannot be asked for; HEAD still checks that the file is there.
            self._request("HEAD", path, {}).close()
            return ReadStream(io.BytesIO(), 0, where)
        # identity: the bytes sent must be the file's, to match its size and checksum.
        headers = {"Accept-Encoding": "identity"}
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
        return ReadStream(response.raw, expected, where,
                          transient=(urllib3.exceptions.HTTPError, requests.RequestException))

    def stat(self, path):
        response = self._request("HEAD", path, {"Accept-Encoding": "identity"})
        response.close()
        modified = response.headers.get("Last-Modified")
        mtime = email.utils.parsedate_to_datetime(modified).timestamp() if modified else None
        return Stat(_size(response), mtime)

    def close(self):
        self._session.close()

    def _request(self, method, path, headers):
        where = self.endpoint.url(path)
        url = self._base + urllib.parse.quote(path or "/")
        try:
            response = self._session.request(method, url, headers=headers, stream=True,
                                             timeout=self.timeout, verify=self._verify,
                                             allow_redirects=True)
        except requests.exceptions.SSLError as error:
            raise PermanentError(f"{where}: TLS failed: {_innermost(error)}",
                                 fix="check the server certificate, or give its CA bundle as "
                                     "the https 'verify' option") from error
        except requests.Timeout as error:
            raise TransferError(f"{where}: no answer within {self.timeout:g} s") from error
        except requests.RequestException as error:
            raise TransferError(f"{where}: {_innermost(error)}") from error
        if response.status_code >= 400:
            response.close()
            status = response.status_code
            transient = status >= 500 or status in _TRANSIENT_STATUSES
            raise (TransferError if transient else PermanentError)(
                f"{where}: HTTP {status} {response.reason}")
        return response


def _size(response):
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def _body_length(response, offset, length, where):
    """How many bytes the answer to a range request must have; a different range is an error."""
    if response.status_code == 206:
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
    """The root cause's message: requests wraps it in layers of pool and retry text."""
    while error.__context__ is not None or error.__cause__ is not None:
        error = error.__cause__ or error.__context__
    return getattr(error, "strerror", None) or str(error)
