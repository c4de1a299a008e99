"""Broker and server URLs that never print their password, and credentials.conf.

A `Url` keeps its password in a field left out of str(), repr(), format() and
equality, so no log line, error message or `show` output can leak it: only
code that connects asks for `url.password`.  Passwords normally live in
<config_dir>/credentials.conf, one URL a line, which must be private to its
owner; `Credentials.complete` attaches them to the URLs a configuration names.
A line for http(s) is for the paths below its own only: its password may be
sent with those requests and no others.
"""
from __future__ import annotations

import dataclasses
import re
import urllib.parse
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from dd.core.errors import ConfigError

if TYPE_CHECKING:
    from _typeshed import StrPath

DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "mqtt": 1883, "mqtts": 8883, "ws": 80, "wss": 443,
                 "http": 80, "https": 443, "sftp": 22, "ftp": 21, "ftps": 21}
SCHEMES = (*DEFAULT_PORTS, "file")
FILE_NAME = "credentials.conf"
#: Schemes whose password goes with each request, so a line's path limits the requests that
#: carry it.  A broker's path is its virtual host, and an SFTP or FTP password opens a session
#: on the whole server: for those, the path of a line is no limit.
PATH_SCOPED = frozenset({"http", "https"})
# A . or .. segment: the server resolves the path to somewhere else than it reads.
_DOT_SEGMENT = re.compile(r"(?:^|/)\.\.?(?:/|$)")


@dataclasses.dataclass(frozen=True, repr=False)
class Url:
    """A parsed URL; `port` is the effective port (the scheme's default when unstated)."""

    scheme: str
    user: str | None = None
    host: str = ""
    port: int | None = None
    path: str = "/"
    query: str = ""
    _password: str | None = dataclasses.field(default=None, compare=False)
    #: A broker option's further URLs, the other nodes of its cluster, tried in turn when
    #: this one does not answer (dd.broker.failover); a URL's text and equality are its own.
    alternates: tuple[Url, ...] = dataclasses.field(default=(), compare=False)

    @classmethod
    def parse(cls, text: str) -> Url:
        """The Url `text` names; ValueError says what is wrong without echoing `text`."""
        try:
            parts = urllib.parse.urlsplit(text.strip())
            port = parts.port
        except ValueError:
            raise ValueError("malformed host or port") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise ValueError(f"scheme must be one of {', '.join(SCHEMES)}")
        host = parts.hostname or ""
        if scheme != "file" and not host:
            raise ValueError("no host")
        return cls(
            scheme=scheme,
            user=urllib.parse.unquote(parts.username) if parts.username else None,
            host=host,
            port=port or DEFAULT_PORTS.get(scheme),
            path=parts.path or "/",
            query=parts.query,
            _password=urllib.parse.unquote(parts.password) if parts.password else None,
        )

    @classmethod
    def parse_several(cls, text: str) -> Url:
        """The first of the URLs `text` names, separated by spaces, with the others as its alternates."""
        first, *others = [cls.parse(word) for word in text.split()] or [cls.parse("")]
        return dataclasses.replace(first, alternates=tuple(others))

    @property
    def every(self) -> tuple[Url, ...]:
        """This URL and its alternates, in the order written."""
        return (dataclasses.replace(self, alternates=()), *self.alternates)

    @property
    def password(self) -> str | None:
        """For connecting only: never put it in a message."""
        return self._password

    @property
    def scope(self) -> str:
        """The decoded directory whose paths this URL's password is for: its path, ending in /."""
        path = urllib.parse.unquote(self.path)
        return path if path.endswith("/") else f"{path}/"

    def with_password(self, password: str | None, user: str | None = None) -> Url:
        return dataclasses.replace(self, _password=password, user=user or self.user)

    @property
    def netloc(self) -> str:
        """host[:port] as a URL writes it (the port when it is not the scheme's default)."""
        netloc = url_host(self.host)
        if self.port is not None and self.port != DEFAULT_PORTS.get(self.scheme):
            netloc += f":{self.port}"
        return netloc

    def __str__(self) -> str:
        netloc = self.netloc
        if self.user:
            netloc = f"{urllib.parse.quote(self.user, safe='')}@{netloc}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{netloc}{self.path}{query}"

    def __repr__(self) -> str:
        return f"Url({str(self)!r})"


def within(path: str, scope: str) -> bool:
    """Whether the decoded URL path `path` is below the directory `scope` (a Url.scope), with
    no . or .. segment that a server would resolve to a path outside it."""
    return path.startswith(scope) and _DOT_SEGMENT.search(path) is None


def url_host(host: str) -> str:
    """A host as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class Credentials:
    """The URLs with passwords from credentials.conf, matched by scheme, user, host and port,
    and for http(s) by path."""

    def __init__(self, urls: Iterable[Url] = ()) -> None:
        self._urls = tuple(urls)

    @classmethod
    def load(cls, config_dir: StrPath) -> Credentials:
        """Credentials from <config_dir>/credentials.conf; none when it does not exist."""
        path = Path(config_dir) / FILE_NAME
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            return cls()
        if mode & 0o077:
            access = "readable" if mode & 0o044 else "writable"
            raise ConfigError(f"credentials file {path} is {access} by group/others",
                              fix=f"run: chmod 600 {path}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read credentials file {path}: {error}") from None
        return cls(_parse_line(line, f"{path}:{number}")
                   for number, line in enumerate(lines, 1)
                   if line.strip() and not line.lstrip().startswith("#"))

    def lookup(self, url: Url) -> Url | None:
        """The credentials entry for `url`; any user matches when `url` names none, and an
        http(s) entry only for a path below its own."""
        path = urllib.parse.unquote(url.path)
        return next((entry for entry in self.for_server(url)
                     if url.scheme not in PATH_SCOPED or within(path, entry.scope)), None)

    def for_server(self, url: Url) -> tuple[Url, ...]:
        """The entries for `url`'s scheme, host and port (and user, if it names one), whatever
        their path, in the file's order; for http(s), the deepest path first, so the first
        entry whose scope holds a path is the most specific one for it."""
        entries = [entry for entry in self._urls
                   if (entry.scheme, entry.host, entry.port) == (url.scheme, url.host, url.port)
                   and url.user in (None, entry.user)]
        if url.scheme in PATH_SCOPED:
            entries.sort(key=lambda entry: len(entry.scope), reverse=True)   # stable: file order
        return tuple(entries)

    def of_user(self, user: str) -> Credentials:
        """Only the lines for a user name: what a relay may use to fetch that source's data."""
        return Credentials(entry for entry in self._urls if entry.user == user)

    def passwords_of(self, user: str, schemes: Collection[str]) -> set[str | None]:
        """The passwords credentials.conf holds for a user name on servers of these schemes."""
        return {entry.password for entry in self._urls if entry.user == user and entry.scheme in schemes}

    def password_for(self, url: Url | str) -> str | None:
        """The password for `url` (a Url or its text): its own, else credentials.conf's."""
        if isinstance(url, str):
            url = Url.parse(url)
        if url.password is not None:
            return url.password
        entry = self.lookup(url)
        return entry.password if entry else None

    def complete(self, url: Url) -> Url:
        """`url` with its password (and user, if it named none) from credentials.conf."""
        entry = None if url.password is not None else self.lookup(url)
        done = url.with_password(entry.password, entry.user) if entry else url
        if url.alternates:      # each node of a cluster has its own line
            done = dataclasses.replace(done, alternates=tuple(self.complete(each) for each in url.alternates))
        return done


def _parse_line(line: str, where: str) -> Url:
    # The line holds a password: messages describe it, never quote it.
    example = "one URL a line, like amqps://user:password@host/"
    words = line.split()
    if len(words) != 1:
        raise ConfigError(f"{where}: expected {example}")
    try:
        url = Url.parse(words[0])
    except ValueError as error:
        raise ConfigError(f"{where}: not a URL ({error})", fix=f"expected {example}") from None
    if url.password is None:
        raise ConfigError(f"{where}: URL has no password", fix=f"expected {example}")
    return url
