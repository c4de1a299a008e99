"""Assembling a file from parts that arrive in any order, twice, or in several
instances at once.

Beside the final name, hidden, in the same directory (so that the last step is
one atomic rename):

* ``.<name>.<version>.ddpart``: the data; each part is written at its offset;
* ``.<name>.<version>.ddstate``: the state record: one status byte per part
  (``v`` once verified), then a 32-byte digest of each part's announced
  checksum, so one part announced with two checksums is refused.

<version> is the notice's mtime (hex microseconds), then a digest of the
whole file's checksum, size and block size: parts of one version only ever
meet parts of the same version.  A newer version removes an older partial
one; a part of a version older than a partial already there is refused.

Locks, all on the state record, so a killed instance leaves none behind: a
record lock (fcntl) on a part's status byte while that part is fetched, so
two instances never write one part at once; flock on the whole record while
reading and marking it, and while completing: the one that marks the last
part has the whole file checked, renames it into place and removes the record.
Record locks belong to a process, not a thread, so a lock per file keeps the
threads of one process apart too.

Partials whose record was not touched for `stale_after` seconds are removed
when a new partial is started in their directory.

The receiver drives, and this module never calls it back: part_slot hands it
a Slot (the partial file, the part's offset and length) to write the part
into; Slot.verified records it and says whether it completed the file; the
receiver then checks the whole and gives it its attributes, and leaving the
slot renames it into place.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import threading
import time
from collections.abc import Iterator

from dd.core import checksum, parts
from dd.core.errors import ChecksumMismatch, NoticeError
from dd.transfer import temporary_name

DATA, STATE = ".ddpart", ".ddstate"
VERIFIED = b"v"
DIGEST = 32
LOCK_POLL = 0.2
_OPEN = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC


class Superseded(NoticeError):
    rule = "superseded"


class Gone(Exception):
    """The partial file was completed or removed while we waited for it: look again."""


def version(leaf, notice):
    """The name of the version of `leaf` a part notice belongs to."""
    whole = notice.checksum
    # An unverifiable value (Sarracenia part tags) differs from part to part: leave it out.
    value = whole.value if checksum.verifiable(whole.method) else ""
    key = hashlib.sha256(f"{leaf}\0{whole.method}:{value}:{notice.size}:{notice.part.block_size}"
                         .encode("utf-8", "surrogateescape"))
    stamp = int(notice.mtime.timestamp() * 1e6) if notice.mtime else 0
    return f"{stamp:014x}-{key.hexdigest()[:16]}"


def names(leaf, the_version):
    """(data file name, state record name) of one version of `leaf`."""
    return (temporary_name(leaf, the_version + DATA), temporary_name(leaf, the_version + STATE))


class Slot:
    """Where one part goes: `file` (the partial file, open for writing), `length` bytes at
    `offset`; the part's alone while the slot is open.  `partial` names the partial file
    (its directory and version) for a caller's caches."""

    def __init__(self, file, part, state, partial):
        self.file = file
        self.partial = partial
        self.offset, self.length = _span(part)
        self.completes = False
        self._state = state
        self._number, self._count = part.block_number, part.block_count

    def verified(self) -> bool:
        """Record the part as written and verified; True when it completed the file.  Raises
        Gone when the partial was completed or removed meanwhile.  When it completed the
        file, the record stays locked until the slot is left, so that the caller checks
        the whole file and gives it its attributes before anyone else sees it complete."""
        fcntl.flock(self._state, fcntl.LOCK_EX)
        try:
            if _removed(self._state):
                raise Gone
            os.pwrite(self._state, VERIFIED, self._number)
            self.completes = os.pread(self._state, self._count, 0) == VERIFIED * self._count
            return self.completes
        finally:
            if not self.completes:
                fcntl.flock(self._state, fcntl.LOCK_UN)


@contextlib.contextmanager
def part_slot(fd, leaf, notice, *, stale_after, tick=None) -> Iterator[Slot | None]:
    """The slot of the part `notice` announces in the partial file of `leaf` in directory
    `fd`, or None when that part is already stored.  Once its slot says it completed the
    file, leaving the slot renames the file into place; leaving it on a ChecksumMismatch
    (the verified parts do not make the announced file) discards the partial file.
    Raises Gone (see there) and Superseded."""
    part = notice.part
    the_version = version(leaf, notice)
    data_name, state_name = names(leaf, the_version)
    st = os.fstat(fd)
    with _process_lock((st.st_dev, st.st_ino, leaf)):
        state, created = _open_state(fd, state_name)
        try:
            if created:
                _sweep(fd, leaf, the_version, stale_after)
            _lock_slot(state, part.block_number, tick)
            with _flocked(state):
                if _removed(state):
                    raise Gone
                out = _prepare(fd, state, data_name, part)
            if out is None:
                yield None
                return
            with out:
                slot = Slot(out, part, state, (st.st_dev, st.st_ino, data_name))
                try:
                    yield slot
                    if slot.completes:
                        os.rename(data_name, leaf, src_dir_fd=fd, dst_dir_fd=fd)
                except ChecksumMismatch:
                    if slot.completes:
                        _remove(fd, data_name, state_name)  # the parts do not make the file
                    raise
                except BaseException:
                    if slot.completes:
                        # Interrupted or failed: this part's notice, not acknowledged,
                        # comes back and completes the file then.
                        os.pwrite(state, b"\0", part.block_number)
                    raise
                else:
                    if slot.completes:
                        os.unlink(state_name, dir_fd=fd)
                finally:
                    if slot.completes:
                        fcntl.flock(state, fcntl.LOCK_UN)
        finally:
            os.close(state)


def discard(fd, leaf, notice):
    """Remove what is left of the partial file of the version `notice` belongs to
    (a crash between the final rename and removing the record leaves one)."""
    st = os.fstat(fd)
    with _process_lock((st.st_dev, st.st_ino, leaf)):
        _remove_locked(fd, names(leaf, version(leaf, notice))[1])


def part_length(part):
    return _span(part)[1]


def _span(part):
    return parts.span(part.block_size, part.block_count, part.remainder, part.block_number)


def _prepare(fd, state, data_name, part):
    """Check and record the part's checksum; the data file open for writing, or None
    when the part is already verified."""
    count, n = part.block_count, part.block_number
    size = count * (1 + DIGEST)
    if os.fstat(state).st_size != size:
        os.ftruncate(state, 0)  # new, or left by a killed instance before it was sized
        os.ftruncate(state, size)
    try:
        out = os.open(data_name, _OPEN, dir_fd=fd)
    except FileNotFoundError:
        # A record without data (removed by hand, or a crash after the rename): start afresh.
        os.ftruncate(state, 0)
        os.ftruncate(state, size)
        out = os.open(data_name, _OPEN | os.O_CREAT, 0o600, dir_fd=fd)
    out = os.fdopen(out, "r+b", buffering=0)
    try:
        digest = hashlib.sha256(f"{part.checksum.method}:{part.checksum.value}".encode()).hexdigest()
        digest = digest[:DIGEST].encode()
        slot = count + n * DIGEST
        recorded = os.pread(state, DIGEST, slot)
        if recorded.strip(b"\0") and recorded != digest:
            raise NoticeError(f"part {n} of {count} was announced before with another checksum",
                              fix="the source posted inconsistent parts; repost the file",
                              rule="part-checksum")
        if os.pread(state, 1, n) == VERIFIED:
            out.close()
            return None
        os.pwrite(state, digest, slot)
        return out
    except BaseException:
        out.close()
        raise


def _open_state(fd, state_name):
    """(descriptor, whether it was created now) of a state record."""
    try:
        return os.open(state_name, _OPEN | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=fd), True
    except FileExistsError:
        try:
            return os.open(state_name, _OPEN, dir_fd=fd), False
        except FileNotFoundError:  # completed in between: make a new one, found empty
            return _open_state(fd, state_name)


def _removed(state):
    return os.fstat(state).st_nlink == 0


def _sweep(fd, leaf, the_version, stale_after):
    """Remove stale partials in the directory and older versions of `leaf`; refuse
    (and remove the record just made) if a newer version of `leaf` is already there."""
    prefix = temporary_name(leaf, "")
    now = time.time()
    for name in os.listdir(fd):
        if not (name.startswith(".") and name.endswith(STATE)):
            continue
        theirs = name[:-len(STATE)].rpartition(".")[2]
        try:
            age = now - os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        ours = name.startswith(prefix) and "." not in name[len(prefix):-len(STATE)]
        if ours and theirs == the_version:
            continue
        if ours and theirs > the_version and age < stale_after:
            _remove(fd, *names(leaf, the_version))
            raise Superseded(f"{leaf}: a newer version is being assembled; this part is of an older one")
        if ours or age >= stale_after:
            _remove_locked(fd, name)


def _remove_locked(fd, state_name):
    """Remove a partial whose record is `state_name`, once nobody is completing it."""
    data_name = state_name[:-len(STATE)] + DATA
    try:
        state = os.open(state_name, _OPEN, dir_fd=fd)
    except FileNotFoundError:
        return
    try:
        with _flocked(state):
            if not _removed(state):
                _remove(fd, data_name, state_name)
    finally:
        os.close(state)


def _remove(fd, *file_names):
    for name in file_names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=fd)


@contextlib.contextmanager
def _flocked(state):
    fcntl.flock(state, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(state, fcntl.LOCK_UN)


def _lock_slot(state, n, tick):
    """Wait for the record lock on part n's status byte (released when `state` closes),
    ticking so a broker connection stays alive meanwhile."""
    while True:
        try:
            fcntl.lockf(state, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, n, os.SEEK_SET)
            return
        except (BlockingIOError, PermissionError):
            if tick is not None:
                tick()
            time.sleep(LOCK_POLL)


_locks = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def _process_lock(key):
    """A lock per file for the threads of this process; forgotten when nobody holds it."""
    with _locks_guard:
        entry = _locks.setdefault(key, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _locks_guard:
            entry[1] -= 1
            if not entry[1]:
                del _locks[key]
