"""Private data on a pump: files that only their named readers may fetch.

A notice with readers is stored under private/<readers>/<source>/ in the pump's
tree (readers sorted, joined with commas: user names cannot hold either), and
the pump's data server asks for a password there.  The passwords are the
readers' data server passwords: the lines of the pump's credentials.conf for
its own data server (post_base_url's scheme, host and port), never their broker
passwords.  They are kept as one htpasswd file per set of readers, in a
directory the data server reads on every request.  The pump's relays
(`relay_readers`, the downstream pumps' feeders) may fetch every private file,
or private data could go no further than one pump.
"""
import logging
import re
import threading
from pathlib import Path

import bcrypt

from dd.core.credentials import Url
from dd.core import atomic

PREFIX = "private"
#: A private area in a URL's path: /private/<readers>/, as a pump's data server serves it.
URL_AREA = re.compile(r"/private/([A-Za-z][A-Za-z0-9_,-]*)/")
log = logging.getLogger("dd.private")
#: nginx checks the password of every private request, in its event loop, with the system's
#: crypt(3): bcrypt's cost 5 takes about a millisecond there, some thirty times the work of
#: Apache's MD5 scheme it replaces, without making the data server slow to serve.
HASH_COST = 5


def key(readers):
    return ",".join(sorted(set(readers)))


def prefix(readers):
    """Where a private file with these readers lives in the tree, and in its URL."""
    return f"{PREFIX}/{key(readers)}"


def readers_in(url_path):
    """The readers a URL's path names as a pump's private area, or [] for public data."""
    match = URL_AREA.search(url_path)
    return sorted(set(match[1].split(","))) if match else []


class Htpasswd:
    """The password files of one data server, one per set of readers.  `server` is the
    data server's URL as readers reach it (post_base_url); `group` (a gid, -1: ours) is
    the data server's, whose workers read the files."""

    def __init__(self, directory, credentials, server, relay_readers=(), group=-1):
        self.directory = Path(directory)
        self.credentials = credentials
        self.server = server
        self.relay_readers = tuple(relay_readers)
        self.group = group
        self._written = set()
        self._lock = threading.Lock()

    def password_of(self, user):
        """`user`'s data server password, or None (logged) when there is none to use."""
        server = self.server
        wanted = Url(scheme=server.scheme, user=user, host=server.host, port=server.port, path=server.path)
        password = self.credentials.password_for(wanted)
        if password is None:
            log.warning("no data server password for %s: add %s://%s:PASSWORD@%s/ to credentials.conf, or "
                        "%s cannot fetch private data from this pump", user, server.scheme, user, server.netloc, user)
        elif password in self.credentials.passwords_of(user, schemes=("amqp", "amqps")):
            log.error("the data server password of %s is also its broker password: give the data server "
                      "a password of its own in credentials.conf; until then %s cannot fetch private data",
                      user, user)
            return None
        return password

    def allow(self, readers):
        """Make sure the file for these readers exists; return their key."""
        name = key(readers)
        with self._lock:
            if name in self._written or (self.directory / name).exists():
                self._written.add(name)
                return name
            lines = []
            for user in sorted(set(readers) | set(self.relay_readers)):
                password = self.password_of(user)
                if password is not None:
                    lines.append(f"{user}:{hashed(password)}\n")
            atomic.replace(self.directory / name, "".join(lines), mode=0o640, group=self.group)
            self._written.add(name)
            return name


def hashed(password):
    """An htpasswd line's hash of `password`: bcrypt's, which nginx checks through crypt(3)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=HASH_COST)).decode()
