"""Sending: make a notice true on a remote destination (dd_sender's work).

The file is read from the notice's URL and written through the destination's
transport (dd.transfer), which writes it under a temporary name, makes the
directories it lacks and renames it into place.  Before that rename the size the
server reports is compared with what was sent, the data with the notice's checksum
(computed while it passes), and, with verify_sent, the copy is read back and its
checksum compared: a wrong file never appears under its final name.  Deletes and
renames act on the destination.

Paths: every relative path is split by dd.core.paths (no '..', absolute path, empty
component or control character, in any spelling); the destination offers no
directory handle to walk, so the joined path is also checked to stay below the
destination's own path.
"""
import posixpath
import time
import urllib.parse
from typing import Optional

from dd.core import checksum, paths
from dd.core.credentials import Url
from dd.core.errors import ChecksumMismatch, ConfigError, DDError, PathError, TransferError
from dd.core.notice import Checksum, Op
from dd.core.outcome import Code, Outcome
from dd.delivery.receive import NO_PROGRESS, retrying, tracking
from dd.transfer import DeniedError, PermanentError, transport_class
from dd.transfer.copy import Nowhere, copy

#: The checksum computed of what is sent when the notice's cannot be checked (name, none).
FALLBACK_CHECKSUM = checksum.DEFAULT
#: The schemes a destination may have: those whose transports write.
SCHEMES = ("sftp", "ftp", "ftps", "file")


class Destination:
    """The `destination` URL: where files go, the one directory they are confined to, and
    the placement (dd.delivery.deliver.Placement) of a sender's notices below it."""

    def __init__(self, url: Url) -> None:
        if url.scheme not in SCHEMES or not transport_class(url.scheme).capabilities.write:
            raise ConfigError(f"destination {url}: dd_sender cannot write to {url.scheme}:",
                              fix=f"use one of {', '.join(s + '://' for s in SCHEMES)}")
        if url.query:
            raise ConfigError(f"destination {url}: a URL with a query", fix="percent-encode '?' as %3F")
        self.url = url
        self.root = posixpath.normpath(urllib.parse.unquote(url.path))
        if not self.root.startswith("/") or self.root.startswith("//"):
            self.root = "/" + self.root.lstrip("/")

    def __str__(self) -> str:
        return str(self.url)    # never its password

    def path(self, rel_path: str) -> str:
        """The destination's absolute path of `rel_path`, or PathError naming the rule."""
        path = posixpath.join(self.root, *paths.split(rel_path))
        if posixpath.normpath(path) != path or not path.startswith(self.root.rstrip("/") + "/"):
            raise PathError(f"{rel_path!r} would leave the destination {self}", rule="dot-dot")
        return path

    def url_of(self, path: str, password: bool = True) -> str:
        """The URL of the destination's `path`, with the destination's password if it has one
        (for the transports), or without (for messages)."""
        url = self.url
        user = urllib.parse.quote(url.user, safe="") if url.user else ""
        if user and password and url.password is not None:
            user += ":" + urllib.parse.quote(url.password, safe="")
        netloc = f"{user}@{url.netloc}" if user else url.netloc
        return f"{url.scheme}://{netloc}{urllib.parse.quote(path)}"

    # -- Placement ----------------------------------------------------------

    def place(self, notice, mask, rel_path, old_rel_path):
        """The accept line's directory, relative, is a directory below the destination."""
        below = below_destination(mask.directory)
        joined = "/".join([*below, rel_path])
        old = "/".join([*below, old_rel_path]) if old_rel_path else None
        return self, joined, old

    @staticmethod
    def announced(notice, base_url, rel_path):
        return base_url, rel_path


def below_destination(directory) -> list[str]:
    """The components of a sender's `directory` option: a relative path below the destination."""
    text = str(directory)
    if text in (".", ""):
        return []
    if text.startswith("/"):
        raise ConfigError(f"directory {text}: dd_sender's directory is below the destination",
                          fix="give a relative directory, or put the path in destination")
    try:
        return paths.split(text.rstrip("/"))
    except PathError as error:
        raise ConfigError(f"directory {text}: {error}", fix="give a plain relative directory") from None


class Sender:
    """Sends notices' files to a destination; one per flow instance.  The receiver of the
    delivering flow (dd.delivery.deliver) when it is a sender: the same `receive`."""

    def __init__(self, transports, *, rate_max=0, pace=None, verify_sent=False, tick=None, attempts=3,
                 progress=None):
        self.transports = transports
        self.progress = progress or NO_PROGRESS     # a dd.store.metrics.Progress
        self.rate_max = rate_max
        self.pace = pace        # rate_max's budget: None, this process's
        self.verify_sent = verify_sent
        self.tick = tick
        self.attempts = attempts

    def close(self):
        self.transports.close()

    def receive(self, notice, tree: Destination, rel_path: str, old_rel_path: Optional[str] = None) -> Outcome:
        """Act on `notice` at `rel_path` below the destination `tree`; never raises for data problems."""
        started = time.monotonic()
        target = None
        try:
            target = tree.path(rel_path)
            if notice.op is Op.DELETE:
                outcome = self._delete(tree, target)
            elif notice.op is Op.LINK:
                outcome = Outcome(Code.DENIED, f"{notice.rel_path} is a link: dd_sender sends files only", "link")
            elif notice.part is not None:
                outcome = Outcome(Code.REFUSED_NOTICE, f"{notice.rel_path} is announced in parts: dd_sender "
                                  "sends whole files (post with blocksize 1)", "parts")
            else:
                outcome = self._send(notice, tree, target)
                if old_rel_path:
                    self._delete(tree, tree.path(old_rel_path))
                    outcome.message += f", renamed from {notice.rename_from}"
        except PathError as error:
            outcome = Outcome(Code.DENIED, str(error), error.rule)
        except TransferError as error:
            outcome = Outcome(error.code, str(error), error.rule)
        except DDError as error:
            outcome = Outcome(Code.REFUSED_NOTICE, str(error), error.rule)
        outcome.local_path = tree.url_of(target, password=False) if target else f"{tree}<refused>"
        outcome.duration = time.monotonic() - started
        return outcome

    def _send(self, notice, tree, target):
        source, source_path = self.transports.for_url(notice.url)
        destination, path = self.transports.for_url(tree.url_of(target))
        where = tree.url_of(target, password=False)
        method = notice.checksum.method
        verify = checksum.verifiable(method)
        hash_method = method if verify else FALLBACK_CHECKSUM

        def check(temporary, result):
            """Before the rename: the data as announced, all of it on the server (and read back)."""
            if verify and result.checksum != notice.checksum.value:
                raise ChecksumMismatch(f"{notice.url}: {method} checksum {result.checksum[:16]}... does not "
                                       f"match the announced {notice.checksum.value[:16]}...; not sent")
            size = destination.stat(temporary).size
            if size is not None and size != result.nbytes:
                raise TransferError(f"{where}: the server holds {size} bytes of the {result.nbytes} sent")
            if self.verify_sent:
                with destination.open_read(temporary, 0, result.nbytes) as back:
                    again = copy(back, Nowhere(), length=result.nbytes, hasher=checksum.new(hash_method),
                                 tick=self.tick, name=f"{where} (read back)")
                if again.checksum != result.checksum:
                    raise ChecksumMismatch(f"{where}: read back, its {hash_method} checksum is not that "
                                           "of the data sent")

        def attempt():
            with source.open_read(source_path, 0, notice.size) as data, \
                    tracking(self.progress, notice.rel_path, notice.size) as tracker:
                return destination.write(path, data, check=check, length=notice.size,
                                         hasher=checksum.new(hash_method), rate_max=self.rate_max, pace=self.pace,
                                         tick=self.tick, progress=tracker.advance, name=notice.url)

        result = retrying(attempt, self.attempts)
        return Outcome(Code.DELIVERED, "sent and read back" if self.verify_sent else "sent", nbytes=result.nbytes,
                       checksum=notice.checksum if verify else Checksum(hash_method, result.checksum))

    def _delete(self, tree, target):
        destination, path = self.transports.for_url(tree.url_of(target))
        try:
            destination.delete(path)
        except DeniedError:
            raise
        except PermanentError:
            if self._exists(destination, path):
                raise
            return Outcome(Code.UNCHANGED, "already absent")
        return Outcome(Code.DELIVERED, "deleted")

    @staticmethod
    def _exists(destination, path):
        try:
            destination.stat(path)
        except DeniedError:
            return True
        except PermanentError:
            return False
        return True
