"""`include https://...`: a config snippet fetched over HTTPS and kept in a local cache.

The cache is one JSON file per URL (its text, ETag and Last-Modified) under
<state_dir>/include/, replaced whole (dd.core.atomic); its mtime is when the server last
vouched for it.  A copy younger than include_refresh is used as is; an older one is
revalidated with a conditional GET (304 keeps it, 200 replaces it).  When the server cannot
be reached or answers anything else, the last good copy is used with a warning; with no copy
at all the configuration does not load.  Certificates are always checked (the system's CAs,
or https_ca_file's), redirects are not followed, and a password (the URL's own or
credentials.conf's) is sent only to the URL it was given for.

Here in core rather than in transfer/ because reading a configuration is core's, and core
imports nothing above it; urllib3 does the HTTP.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http
import json
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

from dd.core import atomic
from dd.core.credentials import Url
from dd.core.errors import CERTIFICATE_FIX, ConfigError
from dd.core.options import format_duration

logger = logging.getLogger(__name__)
CACHE = "include"               # below the state directory
#: Seconds to connect, and to wait for each read.
CONNECT_TIMEOUT, READ_TIMEOUT = 5.0, 10.0
MAX_SIZE = 1 << 20              # a snippet is a few lines; a bigger answer is not one


@dataclasses.dataclass(frozen=True)
class _Copy:
    text: str
    etag: str | None
    last_modified: str | None


class _Unavailable(Exception):
    """The server gave no usable answer; str() says why, `fix` what might help."""

    def __init__(self, reason: str, fix: str | None = None) -> None:
        super().__init__(reason)
        self.fix = fix


def parse(text: str, where: str) -> Url:
    """The URL of an include line; ConfigError unless it is https."""
    try:
        url = Url.parse(text)
    except ValueError as error:
        raise ConfigError(f"{where}: bad include URL: {error}", fix="expected https://host/path.conf") from None
    if url.scheme != "https":
        raise ConfigError(f"{where}: include {url}: a remote include is fetched over https only",
                          fix="use https://")
    return url


def cache_file(state_dir: Path, url: Url) -> Path:
    """Where the copy of `url` is kept: named by a hash of the URL (without its password)."""
    return Path(state_dir) / CACHE / f"{hashlib.sha256(str(url).encode()).hexdigest()[:32]}.json"


def text(url: Url, *, state_dir: Path, refresh: float, ca_file: Path | None, where: str,
         clock: Callable[[], float] = time.time) -> str:
    """The snippet at `url`: the cached copy while it is fresh, else what the server says now,
    else (with a warning) the last good copy; ConfigError when there is none."""
    path = cache_file(state_dir, url)
    kept = _read(path)
    age = clock() - path.stat().st_mtime if kept is not None else 0.0
    if kept is not None and age < refresh:
        return kept.text
    try:
        fresh = _fetch(url, kept, ca_file)
    except _Unavailable as error:
        if kept is None:
            raise ConfigError(f"{where}: cannot fetch {url}: {error}, and no copy of it was kept",
                              fix=error.fix) from None
        logger.warning("%s: cannot fetch %s: %s; using the copy fetched %s ago", where, url, error,
                       format_duration(max(0, round(age))))
        return kept.text
    if fresh is None:           # 304: still good, from now
        os.utime(path)
        return kept.text if kept else ""
    atomic.replace(path, json.dumps({"url": str(url), **dataclasses.asdict(fresh)}) + "\n", mode=0o600)
    return fresh.text


def _read(path: Path) -> _Copy | None:
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return _Copy(saved["text"], saved.get("etag"), saved.get("last_modified"))
    except (OSError, ValueError, KeyError, TypeError):
        return None             # none yet, or damaged: fetched again


def _fetch(url: Url, kept: _Copy | None, ca_file: Path | None) -> _Copy | None:
    """The copy the server has now, or None when it says `kept` is still current."""
    # Imported here: every command reads its configuration, and dd_post's start-up is measured.
    import urllib3
    headers = {"User-Agent": "dd"}
    if kept is not None and kept.etag:
        headers["If-None-Match"] = kept.etag
    if kept is not None and kept.last_modified:
        headers["If-Modified-Since"] = kept.last_modified
    if url.password is not None:
        headers.update(urllib3.make_headers(basic_auth=f"{url.user or ''}:{url.password}"))
    if ca_file is not None:
        try:
            ssl.create_default_context(cafile=str(ca_file))
        except OSError as error:
            raise _Unavailable(f"cannot read https_ca_file {ca_file}: {error.strerror or error}") from None
    target = f"https://{url.netloc}{url.path}" + (f"?{url.query}" if url.query else "")
    try:
        # urllib3 makes the TLS context: given one of ours, urllib3 1.26 (Debian 12's) cannot
        # check the certificate of a server named by its IP address.
        with urllib3.PoolManager(cert_reqs="CERT_REQUIRED", ca_certs=str(ca_file) if ca_file else None,
                                 timeout=urllib3.Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT),
                                 retries=False) as pool:
            response = pool.request("GET", target, headers=headers, redirect=False, preload_content=False)
            try:
                body = response.read(MAX_SIZE + 1)
            finally:
                response.release_conn()
    except urllib3.exceptions.HTTPError as error:
        raise _describe(error) from None
    if response.status == http.HTTPStatus.NOT_MODIFIED and kept is not None:
        return None
    if response.status != http.HTTPStatus.OK:
        moved = response.headers.get("Location")
        raise _Unavailable(f"the server answered {response.status} {response.reason or ''}".rstrip()
                           + (f" (to {moved}: redirects are not followed)" if moved else ""))
    if len(body) > MAX_SIZE:
        raise _Unavailable(f"larger than {MAX_SIZE} bytes: not a config snippet")
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError:
        raise _Unavailable("not UTF-8 text") from None
    return _Copy(decoded, response.headers.get("ETag"), response.headers.get("Last-Modified"))


def _describe(error: Exception) -> _Unavailable:
    """A one-line reason for a failed request, from the innermost error that has one."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return _Unavailable(f"TLS failed: {cause.verify_message or cause.reason}",
                                fix=f"{CERTIFICATE_FIX}, or https_ca_file above the include line")
        if isinstance(cause, ssl.SSLError):
            return _Unavailable(f"TLS failed: {cause.reason or cause}")
        if isinstance(cause, TimeoutError):
            return _Unavailable("no answer in time")
        if isinstance(cause, OSError) and cause.strerror:
            return _Unavailable(cause.strerror.lower())
        cause = getattr(cause, "reason", None) or cause.__cause__ or cause.__context__
    return _Unavailable(type(error).__name__)
