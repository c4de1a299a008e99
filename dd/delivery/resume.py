"""What an interrupted whole-file download leaves, and when to trust it.

A big download writes its temporary file (dd.delivery.receive) with a mark on it, an
extended attribute: the identity of the file it is a copy of (the notice's checksum,
size and mtime) and, when it is written out of order (dd.delivery.ranges), how far the
bytes are all in.  A download of the same file that finds the mark continues after
that prefix, with a range request, once the prefix has been read again into the
checksum; the final checksum still decides, and a prefix that turns out wrong is
thrown away and the file fetched again.  A file of another identity, a mark missing
(a filesystem without user extended attributes: no resume there) or a small file
starts from nothing.
"""
from __future__ import annotations

import os
from typing import Optional

from dd.core import checksum
from dd.core.checksum import Digest
from dd.core.notice import Notice

MARK = "user.dd.resume"
#: Smaller files are fetched again whole: a mark costs more than they do.
RESUME_MIN = 4 << 20


def identity(notice: Notice) -> Optional[bytes]:
    """What the mark of a partial copy of `notice`'s file says, or None where it gets none."""
    whole = notice.checksum
    if notice.size is None or notice.size < RESUME_MIN or whole is None or not checksum.verifiable(whole.method):
        return None
    mtime = notice.mtime.timestamp() if notice.mtime else ""
    return f"{whole.method}:{whole.value}:{notice.size}:{mtime}".encode()


def prefix(fd: int, notice: Notice) -> int:
    """How many leading bytes of the partial file `fd` are of `notice`'s file, by its mark."""
    mine = identity(notice)
    if mine is None:
        return 0
    try:
        recorded, _, frontier = os.getxattr(fd, MARK).rpartition(b"\n")
    except OSError:
        return 0
    if recorded != mine:
        return 0
    size = os.fstat(fd).st_size
    return min(size, int(frontier)) if frontier.isdigit() else size


def mark(fd: int, notice: Notice, frontier: Optional[int] = None) -> None:
    """Mark `fd` as a partial copy of `notice`'s file, whole up to `frontier` (None: up to
    its size, for a file written in order)."""
    mine = identity(notice)
    if mine is not None:
        try:
            os.setxattr(fd, MARK, mine + b"\n" + (b"%d" % frontier if frontier is not None else b""))
        except OSError:
            pass    # no extended attributes here: this download will not be resumed


def forget(fd: int) -> None:
    """Remove the mark: from a file completed, or from a prefix found wrong."""
    try:
        os.removexattr(fd, MARK)
    except OSError:
        pass


def summed(fd: int, method: str, length: int) -> Digest:
    """A hasher of `method` fed the first `length` bytes of `fd`."""
    hasher = checksum.new(method)
    buffer = memoryview(bytearray(checksum.BUFFER_SIZE))
    offset = 0
    while offset < length and (n := os.preadv(fd, [buffer[:min(len(buffer), length - offset)]], offset)):
        hasher.update(buffer[:n])
        offset += n
    return hasher
