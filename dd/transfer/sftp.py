"""sftp: URLs, over paramiko.  Unknown host keys are refused, never added."""
from __future__ import annotations

import contextlib
import io
import os
import posixpath
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import paramiko

from dd.transfer import (Capabilities, Check, DeniedError, Endpoint, Entry, PermanentError, ReadStream, Stat, Transport,
                         entry_of, failures, make_directories, replacing)
from dd.transfer.copy import CopyResult, Source, copy

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_SYSTEM_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"
_TRANSIENT = (paramiko.SSHException, EOFError)


class SftpTransport(Transport):
    capabilities = Capabilities(ranged_read=True, write=True, stat=True, list=True,
                                delete=True, rename=True, entries=True)

    def __init__(self, endpoint: Endpoint, *, password: str | None = None, timeout: float = 30.0,
                 known_hosts: str | None = None, key_filename: str | None = None,
                 ambient_keys: bool = True) -> None:
        """`known_hosts`: a file of host keys trusted besides the system's and the user's;
        `key_filename`: a private key to log in with besides the ssh agent's and ~/.ssh's;
        `ambient_keys` False: not the agent's nor ~/.ssh's, only what is given here."""
        super().__init__(endpoint, password=password, timeout=timeout)
        self._known_hosts = known_hosts
        self._key_filename = key_filename
        self._ambient_keys = ambient_keys
        # One SSH connection per thread: paramiko's SFTPClient mixes up the replies of
        # requests that threads make at once on one session (pipelined writes hang).
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: set[paramiko.SSHClient] = set()

    def open_read(self, path: str, offset: int = 0, length: int | None = None) -> ReadStream:
        with self._session(path) as sftp:
            f = sftp.open(path, "rb")
            f.seek(offset)
            # Pipelined reads; data not yet read waits in the SSH window: memory stays bounded.
            f.prefetch(None if length is None else offset + length)
        return ReadStream(_Pieces(f), length, self.endpoint.url(path), transient=_TRANSIENT)

    def stat(self, path: str) -> Stat:
        with self._session(path) as sftp:
            st = sftp.stat(path)
        return Stat(st.st_size, st.st_mtime)

    def write(self, path: str, stream: Source, check: Check | None = None, **copy_options: Any) -> CopyResult:
        with self._session(path) as sftp:
            make_directories(posixpath.dirname(path), lambda d: _is_directory(sftp, d), sftp.mkdir)
            with replacing(path, sftp.posix_rename, sftp.remove, ignore=_TRANSIENT) as temporary:
                with sftp.open(temporary, "wb") as dst:
                    dst.set_pipelined(True)
                    result = copy(stream, dst, **copy_options)
                if check:
                    check(temporary, result)
        return result

    def entries(self, path: str) -> list[Entry]:
        with self._session(path) as sftp:
            try:
                listing = sftp.listdir_attr(path)   # lstat's attributes: links are not followed
            except UnicodeDecodeError:
                self._drop()    # paramiko reads names as UTF-8: this one left the directory open
                raise
        found = [entry_of(st.filename, st.st_mode or 0, st.st_size, st.st_mtime) for st in listing]
        return sorted((entry for entry in found if entry is not None), key=lambda entry: entry.name)

    def list(self, path: str) -> list[str]:
        with self._session(path) as sftp:
            return sorted(sftp.listdir(path))

    def delete(self, path: str) -> None:
        with self._session(path) as sftp:
            sftp.remove(path)

    def rename(self, old: str, new: str) -> None:
        with self._session(old) as sftp:
            sftp.posix_rename(old, new)

    def close(self) -> None:
        """Disconnect every thread's connection."""
        with self._lock:
            every, self._all = self._all, set()
        for ssh in every:
            ssh.close()
        self._local = threading.local()

    def _drop(self) -> None:
        """Disconnect this thread's connection."""
        ssh = getattr(self._local, "ssh", None)
        if ssh is not None:
            with self._lock:
                self._all.discard(ssh)
            ssh.close()
        self._local.ssh = self._local.sftp = None

    @contextlib.contextmanager
    def _session(self, path: str) -> Iterator[paramiko.SFTPClient]:
        """The SFTP client, connected if need be; errors name the URL of `path`."""
        try:
            with failures(self.endpoint.url(path), _TRANSIENT):
                sftp = getattr(self._local, "sftp", None)
                ssh = getattr(self._local, "ssh", None)
                transport = ssh.get_transport() if ssh is not None else None
                if sftp is None or transport is None or not transport.is_active():
                    sftp = self._connect()
                yield sftp
        except Exception as error:
            if getattr(error, "retryable", False):
                self._drop()   # the connection may be broken; the next call makes a new one
            raise

    def _connect(self) -> paramiko.SFTPClient:
        self._drop()
        endpoint = self.endpoint
        ssh = paramiko.SSHClient()
        ssh.load_system_host_keys()   # ~/.ssh/known_hosts
        for trusted in (_SYSTEM_KNOWN_HOSTS, self._known_hosts):
            if trusted and os.path.exists(trusted):
                ssh.load_system_host_keys(trusted)
        ssh.set_missing_host_key_policy(_Refuse(endpoint))
        try:
            ssh.connect(endpoint.host, port=endpoint.port or 22, username=endpoint.user,
                        password=self._password, key_filename=self._key_filename,
                        look_for_keys=self._ambient_keys, allow_agent=self._ambient_keys,
                        timeout=self.timeout, banner_timeout=self.timeout,
                        auth_timeout=self.timeout)
            sftp = ssh.open_sftp()
        except paramiko.AuthenticationException as error:
            ssh.close()
            raise DeniedError(
                f"{endpoint.url()}: login refused: {error}",
                fix="check the password in credentials.conf or the ssh key") from error
        except paramiko.BadHostKeyException as error:
            ssh.close()
            raise PermanentError(f"{endpoint.url()}: host key differs from known_hosts",
                                 fix="the server changed or is an impostor; check before "
                                     "updating known_hosts") from error
        except BaseException:
            ssh.close()
            raise
        sftp.sock.settimeout(self.timeout)
        with self._lock:
            self._all.add(ssh)
        self._local.ssh, self._local.sftp = ssh, sftp
        return sftp


class _Refuse(paramiko.MissingHostKeyPolicy):
    def __init__(self, endpoint: Endpoint) -> None:
        self._endpoint = endpoint

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        endpoint = self._endpoint
        raise PermanentError(f"{endpoint.url()}: host key of {hostname} is not in known_hosts",
                             fix=f"check it, then: ssh-keyscan -p {endpoint.port or 22} "
                                 f"{endpoint.host} >> ~/.ssh/known_hosts")


class _Pieces(io.RawIOBase):
    """Fills the caller's buffer from request-sized reads: paramiko's read(n) for
    large n joins its pieces in quadratic time."""

    def __init__(self, f: paramiko.SFTPFile) -> None:
        super().__init__()
        self._f = f

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer)
        filled = 0
        while filled < len(view):
            piece = self._f.read(min(len(view) - filled, self._f.MAX_REQUEST_SIZE))
            if not piece:
                break
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
        return filled

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()


def _is_directory(sftp: paramiko.SFTPClient, path: str) -> bool:
    try:
        sftp.stat(path)
    except FileNotFoundError:
        return False
    return True
