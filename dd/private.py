"""Private data on a pump: files that only their named readers may fetch.

A notice with readers is stored under private/<readers>/ in the pump's tree
(readers sorted, joined with commas: user names cannot hold either), and the
pump's data server asks for a password there.  The passwords are those of the
pump's users in credentials.conf, kept as one htpasswd file per set of readers,
in a directory the data server reads on every request.  The pump's relays
(`relay_readers`, the downstream pumps' feeders) may fetch every private file,
or private data could go no further than one pump.
"""
import logging
import os
import threading
from pathlib import Path

from passlib.hash import apr_md5_crypt

PREFIX = "private"
log = logging.getLogger("dd.private")


def key(readers):
    return ",".join(sorted(set(readers)))


def prefix(readers):
    """Where a private file with these readers lives in the tree, and in its URL."""
    return f"{PREFIX}/{key(readers)}"


class Htpasswd:
    """The password files of one data server, one per set of readers."""

    def __init__(self, directory, credentials, relay_readers=()):
        self.directory = Path(directory)
        self.credentials = credentials
        self.relay_readers = tuple(relay_readers)
        self._written = set()
        self._lock = threading.Lock()

    def allow(self, readers):
        """Make sure the file for these readers exists; return their key."""
        name = key(readers)
        with self._lock:
            if name in self._written or (self.directory / name).exists():
                self._written.add(name)
                return name
            lines = []
            for user in sorted(set(readers) | set(self.relay_readers)):
                password = self.credentials.password_of(user)
                if password is None:
                    log.warning("private data for %s: no password for user %s in credentials.conf, who "
                                "cannot fetch it from this pump", name, user)
                    continue
                lines.append(f"{user}:{apr_md5_crypt.hash(password)}\n")
            self.directory.mkdir(parents=True, exist_ok=True)
            tmp = self.directory / f".{name}.{os.getpid()}.tmp"
            tmp.write_text("".join(lines))
            tmp.chmod(0o640)
            os.replace(tmp, self.directory / name)
            self._written.add(name)
            return name
