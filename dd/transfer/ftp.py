"""ftp: and ftps: URLs, over the standard library's ftplib: passive mode, binary (TYPE I).

ftps is explicit FTPS (AUTH TLS on the control port, PROT P so data channels are
encrypted too); the server's certificate is always checked, for the host the URL names.
A URL's path is the server's absolute path, as for sftp (not relative to the login
directory as RFC 1738 has it).  Connections are logged in once and kept idle between
requests; one carries one transfer at a time, so transfer threads each take their own.
"""
from __future__ import annotations

import calendar
import contextlib
import ftplib
import io
import ipaddress
import logging
import posixpath
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from dd.core.errors import CERTIFICATE_FIX, TransferError
from dd.transfer import (Capabilities, Check, DeniedError, Endpoint, Entry, PermanentError, ReadStream, Stat, Transport,
                         failures, make_directories, replacing)
from dd.transfer.copy import CopyResult, Source, copy
from dd.transfer.pool import Idle, closed_by_server

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

log = logging.getLogger(__name__)
# Failures after which the connection is in an unknown state: it is dropped, and trying again may help.
# A name that is not UTF-8 stops a listing halfway: the rest of it is still on the way.
_BROKEN = (OSError, EOFError, ftplib.error_temp, ftplib.error_reply, ftplib.error_proto, UnicodeDecodeError)
# Replies that end a download the client stopped reading: the server saw it go (426, 451)
# or had sent everything already (2xx).
_ABORTED = ("2", "426", "451")
_warned: set[str] = set()
_warned_lock = threading.Lock()


class _FtpTls(ftplib.FTP_TLS):
    """FTP_TLS whose data channels resume the control channel's TLS session: servers such
    as vsftpd (require_ssl_reuse, its default) refuse data channels that do not."""

    def ntransfercmd(self, cmd: str, rest: int | str | None = None) -> tuple[socket.socket, int | None]:
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        control = self.sock
        session = control.session if isinstance(control, ssl.SSLSocket) else None
        return self.context.wrap_socket(conn, server_hostname=self.host, session=session), size


class FtpTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=True, stat=True, list=True,
                                delete=True, rename=True, entries=True)

    def __init__(self, endpoint: Endpoint, *, password: str | None = None, timeout: float = 30.0,
                 ca_file: str | None = None) -> None:
        """`ca_file`: CA certificates (PEM) that an ftps server's certificate is checked
        against instead of the system's."""
        super().__init__(endpoint, password=password, timeout=timeout)
        self._tls = ssl.create_default_context(cafile=ca_file) if endpoint.scheme == "ftps" else None
        self._idle: Idle[ftplib.FTP] = Idle(self._connect, _usable, _quit)

    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> ReadStream:
        where = self.endpoint.url(path)
        if length == 0:
            self.stat(path)   # no transfer of nothing; the file must still be there
            return ReadStream(io.BytesIO(), 0, where)
        with self._connection(path, lend=True) as ftp:
            conn = ftp.transfercmd(f"RETR {path}", rest=offset or None)
        # The connection is the stream's until it is closed, then back to the idle ones.
        return ReadStream(_Download(ftp, conn, where, self._idle), length, where)

    def stat(self, path: str) -> Stat:
        with self._connection(path) as ftp:
            facts = self._facts(ftp, path)
            if facts is None:   # no MLST: SIZE and MDTM
                return Stat(ftp.size(path), _mtime(ftp.sendcmd(f"MDTM {path}")[4:].strip()))
        size = facts.get("size")
        return Stat(int(size) if size is not None and size.isdigit() else None, _mtime(facts.get("modify")))

    def write(self, path: str, stream: Source, check: Check | None = None, **copy_options: Any) -> CopyResult:
        with self._connection(path) as ftp:
            make_directories(posixpath.dirname(path), lambda d: _is_directory(ftp, d),
                             lambda d: _mkdir(ftp, d))
            with replacing(path, ftp.rename, ftp.delete,
                           ignore=ftplib.all_errors) as temporary:
                conn = ftp.transfercmd(f"STOR {temporary}")
                try:
                    result = copy(stream, _Upload(conn), **copy_options)
                    _shut(conn)
                except BaseException:
                    conn.close()
                    if not _end_transfer(ftp):   # the server's reply to the cut STOR
                        _quit(ftp)   # out of step: not given back (the removal fails quietly)
                    raise
                conn.close()   # the end of the file, for the server
                ftp.voidresp()
                if check:
                    check(temporary, result)
        return result

    def entries(self, path: str) -> list[Entry]:
        """MLSD's facts (RFC 3659): type, size and modify; LIST's text is not read."""
        with self._connection(path) as ftp:
            try:
                listing = _text(ftp, ftp.mlsd, path, facts=["type", "size", "modify"])
            except ftplib.error_perm as error:
                if not _unknown_command(error):
                    raise
                raise PermanentError(f"{self.endpoint.url(path)}: the server has no MLSD",
                                     fix="poll it over sftp or http, or upgrade the FTP server") from None
        found = []
        for name, facts in listing:
            kind = facts.get("type", "").lower()
            if kind in ("file", "dir") and name not in ("", ".", "..") and "/" not in name:
                size = facts.get("size", "")
                found.append(Entry(name, kind == "dir", int(size) if kind == "file" and size.isdigit() else None,
                                   _mtime(facts.get("modify"))))
        return sorted(found, key=lambda entry: entry.name)

    def list(self, path: str) -> list[str]:
        with self._connection(path) as ftp:
            try:
                names = [name for name, facts in _text(ftp, ftp.mlsd, path)
                         if facts.get("type") not in ("cdir", "pdir")]
            except ftplib.error_perm as error:
                if not _unknown_command(error):
                    raise
                names = [posixpath.basename(name.rstrip("/")) for name in _text(ftp, ftp.nlst, path)]
        return sorted(name for name in names if name not in ("", ".", ".."))

    def delete(self, path: str) -> None:
        with self._connection(path) as ftp:
            ftp.delete(path)

    def rename(self, old: str, new: str) -> None:
        with self._connection(old) as ftp:
            ftp.rename(old, new)

    def close(self) -> None:
        self._idle.close()

    @staticmethod
    def _facts(ftp: ftplib.FTP, path: str) -> dict[str, str] | None:
        """MLST's facts of `path`, lower-cased; None where the server has no MLST."""
        try:
            reply = ftp.sendcmd(f"MLST {path}")
        except ftplib.error_perm as error:
            if _unknown_command(error):
                return None
            raise
        lines = reply.splitlines()
        entry = lines[1] if len(lines) > 2 else ""
        facts = entry.strip().partition(" ")[0]
        return {key.lower(): value for key, _, value in
                (fact.partition("=") for fact in facts.split(";") if fact)}

    @contextlib.contextmanager
    def _connection(self, path: str, lend: bool = False) -> Iterator[ftplib.FTP]:
        """A logged-in connection, idle or new, given back after the block (`lend`: only if
        the block fails; the caller hands it on) unless the block broke it; errors name the
        URL of `path`."""
        with _errors(self.endpoint.url(path)):
            ftp, _ = self._idle.take()
            try:
                yield ftp
            except _BROKEN:
                _quit(ftp)
                raise
            except BaseException:
                self._idle.give_back(ftp)
                raise
            if not lend:
                self._idle.give_back(ftp)

    def _connect(self) -> ftplib.FTP:
        endpoint = self.endpoint
        where = endpoint.url()
        ftp = _FtpTls(context=self._tls, timeout=self.timeout) if self._tls else ftplib.FTP(timeout=self.timeout)
        try:
            ftp.connect(endpoint.host, endpoint.port or 21)
            if isinstance(ftp, _FtpTls):
                _secure(ftp, where)
            self._login(ftp, where)
            if isinstance(ftp, _FtpTls):
                ftp.prot_p()
            ftp.voidcmd("TYPE I")
            with contextlib.suppress(ftplib.error_perm):
                ftp.sendcmd("OPTS UTF8 ON")   # servers that speak other encodings by default
        except BaseException:
            _quit(ftp)
            raise
        return ftp

    def _login(self, ftp: ftplib.FTP, where: str) -> None:
        endpoint, password = self.endpoint, self._password
        if password is not None and endpoint.scheme == "ftp":
            _warn_clear(endpoint)
        try:
            # No user: anonymous FTP (ftplib gives anonymous@ as its password), as curl does.
            ftp.login(endpoint.user or "anonymous", password or "")
        except ftplib.error_perm as error:
            reply = _reply(error)
            if endpoint.scheme == "ftp" and any(word in reply.lower() for word in ("tls", "ssl", "encrypt")):
                raise PermanentError(f"{where}: the server requires TLS: {reply}",
                                     fix="use an ftps:// URL") from error
            raise DeniedError(f"{where}: login refused: {reply}",
                              fix="check the password in credentials.conf") from error


class _Download(io.RawIOBase):
    """A RETR's data channel; closing it ends the transfer and gives the connection back."""

    def __init__(self, ftp: ftplib.FTP, conn: socket.socket, where: str, idle: Idle[ftplib.FTP]) -> None:
        super().__init__()
        self._ftp, self._conn, self._where, self._idle = ftp, conn, where, idle
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        n = self._conn.recv_into(buffer)
        self._ended = n == 0 or self._ended
        return n

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        ftp = self._ftp
        try:
            with _errors(self._where):
                if self._ended:
                    _shut(self._conn)
                    self._conn.close()
                    ftp.voidresp()
                else:
                    # Stopped before the end (a range): closing the data channel makes the server
                    # answer the RETR, and the control channel is in step again; no ABOR needed.
                    self._conn.close()
                    if not _end_transfer(ftp):
                        raise TransferError(f"{self._where}: the server did not end the cut transfer")
        except BaseException:
            _quit(ftp)
            raise
        self._idle.give_back(ftp)


class _Upload:
    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn

    def write(self, data: ReadableBuffer) -> None:
        self._conn.sendall(data)


def _end_transfer(ftp: ftplib.FTP) -> bool:
    """Read the reply to a transfer cut short; whether the control channel is usable again."""
    try:
        return ftp.getresp().startswith(_ABORTED)
    except ftplib.error_temp as error:
        return _reply(error).startswith(_ABORTED)
    except ftplib.all_errors:
        return False


def _shut(conn: socket.socket) -> None:
    """End a TLS data channel with its close_notify, as servers expect of a complete transfer."""
    if isinstance(conn, ssl.SSLSocket):
        with contextlib.suppress(OSError, ValueError):
            conn.unwrap()


def _secure(ftp: _FtpTls, where: str) -> None:
    """AUTH TLS: the control channel encrypted, the server's certificate checked."""
    try:
        ftp.auth()
    except ftplib.error_perm as error:
        raise PermanentError(f"{where}: the server does not speak TLS: {_reply(error)}",
                             fix="it offers no FTPS (AUTH TLS); use ftp:// only where "
                                 "passwords and data may travel in clear") from error
    except ssl.SSLCertVerificationError as error:
        raise PermanentError(f"{where}: TLS failed: certificate verify failed: {error.verify_message}",
                             fix=f"{CERTIFICATE_FIX}, or ftps_ca_file") from error
    except ssl.SSLError as error:
        raise PermanentError(f"{where}: TLS failed: {error.reason or error}",
                             fix="check that the server speaks FTPS on this port") from error


def _usable(ftp: ftplib.FTP) -> bool:
    return ftp.sock is not None and not closed_by_server(ftp.sock)


def _quit(ftp: ftplib.FTP) -> None:
    ftp.close()   # no QUIT: a broken connection would wait for its reply


def _is_directory(ftp: ftplib.FTP, path: str) -> bool:
    """Whether `path` is a directory one may enter (the working directory changes: every
    path dd sends is absolute)."""
    try:
        ftp.cwd(path)
    except ftplib.error_perm:
        return False
    return True


def _mkdir(ftp: ftplib.FTP, path: str) -> None:
    try:
        ftp.mkd(path)
    except ftplib.error_perm:
        if not _is_directory(ftp, path):   # else another writer made it in the meantime
            raise


def _unknown_command(error: ftplib.error_perm) -> bool:
    return _reply(error)[:3] in ("500", "502", "504")


def _reply(error: BaseException) -> str:
    return str(error).strip()


def _text(ftp: ftplib.FTP, command: Callable[..., Iterable[Any]], *args: Any, **kwargs: Any) -> list[Any]:
    """What a listing command gives, all read; ftplib switches to TYPE A for it, and
    the connection goes back to binary for the transfers after it."""
    try:
        return list(command(*args, **kwargs))
    finally:
        ftp.voidcmd("TYPE I")   # failing, the connection is broken and dropped


def _mtime(modify: str | None) -> float | None:
    """Seconds since the epoch of an MLST or MDTM time, YYYYMMDDHHMMSS[.sss] in UTC."""
    if not modify:
        return None
    whole, _, fraction = modify.partition(".")
    try:
        seconds = calendar.timegm(time.strptime(whole, "%Y%m%d%H%M%S"))
    except ValueError:
        return None
    return seconds + float(f"0.{fraction}") if fraction.isdigit() else float(seconds)


def _warn_clear(endpoint: Endpoint) -> None:
    """Once per server: a password sent over plain FTP, to another machine, can be read on the way."""
    host = endpoint.host
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).is_loopback:
            return
    if host == "localhost":
        return
    with _warned_lock:
        if host in _warned:
            return
        _warned.add(host)
    log.warning("%s: the password goes in clear over ftp; use ftps where the server offers it",
                endpoint.url())


@contextlib.contextmanager
def _errors(where: str) -> Iterator[None]:
    """FTP replies and connection failures as TransferErrors naming `where` (never a password:
    the server's replies to the login are its own words, and ftplib quotes no command)."""
    try:
        with failures(where, (EOFError,)):
            yield
    except ftplib.error_perm as error:
        reply = _reply(error)
        cls = DeniedError if reply.startswith("530") else PermanentError
        raise cls(f"{where}: {reply}") from error
    except ftplib.error_temp as error:
        raise TransferError(f"{where}: {_reply(error)}") from error
    except (ftplib.error_reply, ftplib.error_proto) as error:
        raise TransferError(f"{where}: unexpected reply: {_reply(error)}") from error
    except ValueError as error:   # ftplib refuses paths with line breaks
        raise PermanentError(f"{where}: {error}") from error

