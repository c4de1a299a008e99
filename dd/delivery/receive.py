"""Receiving: make a notice true in a local tree, safely.

Data is fetched to a temporary name beside its final name, verified (size and
checksum, computed while copying), given its times and a safe mode, and only
then renamed into place, so a partial or wrong file never appears under a
final name.  A part of a file is written into the slot dd.delivery.assembly
offers in a partial file beside it; the part that completes the file has the
whole checked here, and assembly renames it into place.  Deletes, links and
renames act inside the tree only.  Every filesystem access goes through
dd.core.paths.Tree.
"""
import contextlib
import errno
import fcntl
import logging
import os
import stat
import time

from dd.core import checksum
from dd.core.errors import ChecksumMismatch, DDError, PathError, TransferError
from dd.core.notice import Checksum, Op
from dd.core.outcome import Code, Outcome
from dd.delivery import assembly, ranges, resume
from dd.transfer import WRITING, RangeIgnored, temporary_name
from dd.transfer.copy import copy

SUM_CACHE_SIZE = 1024
PREFIX_CACHE_SIZE = 64
log = logging.getLogger("dd.receive")


class Receiver:
    """Delivers notices into trees; one per flow instance."""

    def __init__(self, transports, *, download_checksum="sha512", rate_max=0, pace=None, fsync=False,
                 tick=None, attempts=3, stale_after=86400.0, progress=None, parallel=1):
        self.transports = transports
        self.progress = progress or NO_PROGRESS   # a dd.store.metrics.Progress
        self.parallel = parallel         # connections a big whole file is fetched over
        self.download_checksum = download_checksum
        self.rate_max = rate_max
        self.pace = pace        # rate_max's budget: None, this process's
        self.fsync = fsync
        self.tick = tick
        self.attempts = attempts
        self.stale_after = stale_after   # partial files untouched this long are removed
        # Checksums of local files by identity and change time: parts announced again
        # must not make us hash a whole big file once per part.
        self._sums = {}
        # Whole-file checksums of the leading parts of files being assembled, fed while
        # the parts arrive in order: the check at completion then reads only the rest.
        self._prefixes = {}

    def close(self):
        self.transports.close()

    def receive(self, notice, tree, rel_path, old_rel_path=None):
        """Act on `notice` at `rel_path` inside `tree`; never raises for data problems.

        `old_rel_path` is where a rename's rename_from lands in the same tree.
        """
        started = time.monotonic()
        try:
            if notice.op is Op.DELETE:
                outcome = self._delete(tree, rel_path)
            elif notice.op is Op.LINK:
                outcome = self._link(notice, tree, rel_path)
            else:
                outcome = self._write(notice, tree, rel_path, old_rel_path)
        except PathError as error:
            outcome = Outcome(Code.DENIED, str(error), error.rule)
        except assembly.Superseded as error:
            outcome = Outcome(Code.SUPERSEDED, str(error), error.rule)
        except TransferError as error:
            outcome = Outcome(error.code, str(error), error.rule)
        except DDError as error:
            outcome = Outcome(Code.REFUSED_NOTICE, str(error), error.rule)
        except OSError as error:
            # Permissions are the configuration's to fix: say so, rather than only "failed".
            fix = (" (give dd's user write permission there, or change directory)"
                   if error.errno in (errno.EACCES, errno.EPERM) else "")
            outcome = Outcome(Code.NO_SPACE if error.errno == errno.ENOSPC else Code.FAILED,
                              f"cannot write {tree.path(rel_path)}: {error.strerror}{fix}", "filesystem")
        outcome.local_path = outcome.local_path or _display(tree, rel_path)
        outcome.duration = time.monotonic() - started
        return outcome

    # -- file content -------------------------------------------------------

    def _write(self, notice, tree, rel_path, old_rel_path):
        method = notice.checksum.method
        with tree.parent(rel_path) as (fd, leaf):
            refuse_directory(fd, leaf, rel_path)
            if self._already_have(notice, fd, leaf):
                if notice.part is not None:
                    assembly.discard(fd, leaf, notice)
                return Outcome(Code.UNCHANGED, "already up to date", checksum=notice.checksum)
            if notice.part is not None:
                return self._write_part(notice, tree, fd, leaf)
            if old_rel_path and self._rename_local(notice, tree, fd, leaf, old_rel_path):
                return Outcome(Code.DELIVERED, f"renamed from {notice.rename_from}", checksum=notice.checksum)
            transport, path = self.transports.for_url(notice.url)
            verify = checksum.verifiable(method)
            hash_method = method if verify else self.download_checksum
            digest = retrying(lambda: self._fetch(transport, path, notice, tree, fd, leaf, hash_method, verify),
                              self.attempts)
            return Outcome(Code.DELIVERED, "delivered", nbytes=notice.size,
                           checksum=notice.checksum if verify else Checksum(hash_method, digest))

    def _write_part(self, notice, tree, fd, leaf):
        """Store one part; the part that completes the file is the one DELIVERED."""
        part = notice.part
        label = f"part {part.block_number} of {part.block_count}"
        source = self.transports.for_url(notice.url)
        for _ in range(self.attempts):
            try:
                with assembly.part_slot(fd, leaf, notice, stale_after=self.stale_after, tick=self.tick) as slot:
                    if slot is None:
                        return Outcome(Code.UNCHANGED, f"{label} already stored")
                    retrying(lambda: self._fetch_part(source, notice, slot, label), self.attempts)
                    if not slot.verified():
                        return Outcome(Code.PART_STORED, f"{label} stored", nbytes=slot.length)
                    value = self._check_whole(notice, slot)
                    self._finish(slot.file, notice, tree)
                # Left without an error: the file is in place.
                return Outcome(Code.DELIVERED, f"delivered: {label} completed the file", nbytes=slot.length,
                               checksum=value)
            except assembly.Gone:
                # Completed (or removed) by another instance while we waited for it.
                if self._already_have(notice, fd, leaf):
                    return Outcome(Code.UNCHANGED, "already up to date", checksum=notice.checksum)
        raise TransferError(f"{notice.url}: the partial file of {leaf} kept disappearing",
                            fix="another program is removing hidden files in the directory")

    def _fetch_part(self, source, notice, slot, label):
        """Write the part into its slot, verified against its checksum; while the parts come
        in order, the whole file's checksum is fed too (see _prefixes)."""
        transport, path = source
        part, whole = notice.part, notice.checksum
        method = part.checksum.method
        verify = checksum.verifiable(method)
        hasher = checksum.new(method) if verify else None
        # A prefix only ever holds bytes that passed their part's checksum.
        prefixed = verify and checksum.verifiable(whole.method)
        prefix = self._prefixes.pop(slot.partial, None) if prefixed else None
        if prefix is None and slot.offset == 0 and prefixed:
            prefix = (checksum.new(whole.method), 0)
        follow = prefix is not None and prefix[1] == slot.offset
        slot.file.seek(slot.offset)
        with transport.open_read(path, slot.offset, slot.length) as data, \
                tracking(self.progress, f"{notice.rel_path} ({label})", slot.length) as tracker:
            result = copy(data, slot.file, length=slot.length, hasher=hasher,
                          also_hash=[prefix[0]] if follow else (), rate_max=self.rate_max, pace=self.pace,
                          tick=self.tick, progress=tracker.advance, name=f"{notice.url} {label}")
        if verify and result.checksum != part.checksum.value:
            raise ChecksumMismatch(
                f"{notice.url} {label}: {method} checksum {result.checksum[:16]}... does not match "
                f"the announced {part.checksum.value[:16]}...")
        if prefix is not None:
            if len(self._prefixes) >= PREFIX_CACHE_SIZE:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[slot.partial] = (prefix[0], slot.offset + slot.length) if follow else prefix

    def _check_whole(self, notice, slot):
        """The checksum of the completed file, read from where its prefix ends; a WholeMismatch
        when the verified parts do not make the announced file."""
        whole = notice.checksum
        verify = checksum.verifiable(whole.method)
        prefix = self._prefixes.pop(slot.partial, None) if verify else None
        if prefix is None:
            prefix = (checksum.new(whole.method if verify else self.download_checksum), 0)
        value = _continue_sum(slot.file.fileno(), *prefix)
        if verify and value != whole.value:
            raise WholeMismatch(
                f"{notice.url}: the {notice.part.block_count} verified parts do not make the announced file "
                f"({whole.method} {value[:16]}... is not {whole.value[:16]}...); partial file discarded")
        return whole if verify else Checksum(self.download_checksum, value)

    def _finish(self, out, notice, tree):
        """Give a written file its mode, its restrictions, durability and its times."""
        os.fchmod(out.fileno(), tree.file_mode(notice.mode))
        tree.restrict(out.fileno())
        if self.fsync:
            os.fsync(out.fileno())
        if notice.mtime is not None:
            os.utime(out.fileno(), ((notice.atime or notice.mtime).timestamp(), notice.mtime.timestamp()))

    def _already_have(self, notice, fd, leaf):
        try:
            st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != notice.size:
            return False
        method = notice.checksum.method
        if not checksum.verifiable(method):
            return False
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, method)
        value = self._sums.get(key)
        if value is None:
            value = _sum_at(fd, leaf, method)
            if len(self._sums) >= SUM_CACHE_SIZE:
                self._sums.clear()
            self._sums[key] = value
        return value == notice.checksum.value

    def _fetch(self, transport, path, notice, tree, fd, leaf, method, verify):
        """Download to a temporary name, verify, set attributes, rename into place.  A big
        file's temporary copy is kept when the transfer fails, so that the next attempt
        (or the notice's return after a crash) continues it (dd.delivery.resume)."""
        tmp, out_fd = _open_temporary(fd, leaf)
        keep = False
        try:
            with os.fdopen(out_fd, "wb", buffering=0) as out:
                start = resume.prefix(out_fd, notice) if verify else 0
                try:
                    with tracking(self.progress, notice.rel_path, notice.size) as tracker:
                        digest = self._download(transport, path, notice, out, start, method, tracker)
                except (TransferError, KeyboardInterrupt, SystemExit) as error:
                    # Cut off, or stopped: the next attempt continues.  Refused: it starts over.
                    keep = getattr(error, "retryable", True) and resume.identity(notice) is not None
                    raise
                if verify and digest != notice.checksum.value:
                    if start:   # the prefix was of another file after all: fetch it all again
                        resume.forget(out_fd)
                        log.warning("%s: the %d bytes resumed from %s were not of this file; fetching "
                                    "it again", notice.url, start, tmp)
                    raise ChecksumMismatch(
                        f"{notice.url}: {method} checksum {digest[:16]}... does not match "
                        f"the announced {notice.checksum.value[:16]}...")
                if resume.identity(notice) is not None:
                    resume.forget(out_fd)
                self._finish(out, notice, tree)
            os.rename(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
            return digest
        except BaseException:
            if not keep:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=fd)
            raise

    def _download(self, transport, path, notice, out, start, method, tracker, streams=None):
        """Fetch `notice`'s file into `out` after its first `start` bytes (already there);
        its hex digest of `method`.  Over `parallel` connections when it is big enough and
        the server answers ranges."""
        streams = self.parallel if streams is None else streams
        fd, size = out.fileno(), notice.size
        tracker.advance(start)
        if start:
            log.info("%s: resuming after %d of %d bytes", notice.url, start, size)
            hasher = resume.summed(fd, method, start)
        else:
            hasher = checksum.new(method)
        # What a killed instance left past the prefix (pieces out of order, holes) goes: a
        # file written in order is trusted up to its size.  On ext4 even an empty truncate
        # costs 0.1 ms.
        if os.fstat(fd).st_size > start:
            os.ftruncate(fd, start)
        try:
            # Under rate_max the process's bytes are paced as one: more streams would not help.
            if (size is not None and transport.concurrent_reads and not self.rate_max
                    and ranges.worth_it(size - start, streams)):
                resume.mark(fd, notice, start)
                done = [start]

                def reached(offset):
                    resume.mark(fd, notice, offset)
                    tracker.advance(offset - done[0])
                    done[0] = offset
                return ranges.fetch(lambda: transport.range_reader(path), fd,
                                    start=start, end=size, hasher=hasher, streams=streams,
                                    attempts=self.attempts, tick=self.tick,
                                    reached=reached, name=notice.url)
            resume.mark(fd, notice)
            out.seek(start)
            length = size - start if start else size
            with transport.open_read(path, start, length) as source:
                return copy(source, out, length=length, hasher=hasher, rate_max=self.rate_max, pace=self.pace,
                            tick=self.tick, progress=tracker.advance).checksum
        except RangeIgnored:
            if not start and streams == 1:
                raise
            log.warning("%s: the server answers byte ranges with the whole file; fetching it whole, "
                        "on one connection", notice.url)
            resume.forget(fd)
            return self._download(transport, path, notice, out, 0, method, tracker, streams=1)

    def _rename_local(self, notice, tree, fd, leaf, old):
        """Move our copy of rename_from if it holds the announced content."""
        try:
            with tree.parent(old, create=False) as (old_fd, old_leaf):
                return self._move_if_same(notice, old_fd, old_leaf, fd, leaf)
        except (FileNotFoundError, NotADirectoryError):
            return False

    @staticmethod
    def _move_if_same(notice, old_fd, old_leaf, fd, leaf):
        st = os.stat(old_leaf, dir_fd=old_fd, follow_symlinks=False)
        method = notice.checksum.method
        if not (stat.S_ISREG(st.st_mode) and st.st_size == notice.size and checksum.verifiable(method)
                and _sum_at(old_fd, old_leaf, method) == notice.checksum.value):
            return False
        os.rename(old_leaf, leaf, src_dir_fd=old_fd, dst_dir_fd=fd)
        return True

    # -- other operations ---------------------------------------------------

    def _delete(self, tree, rel_path):
        try:
            with tree.parent(rel_path, create=False) as (fd, leaf):
                st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    raise PathError(f"{rel_path!r} is a directory; only files and links are deleted",
                                    rule="not-a-file")
                os.unlink(leaf, dir_fd=fd)
        except (FileNotFoundError, NotADirectoryError):
            return Outcome(Code.UNCHANGED, "already absent")
        return Outcome(Code.DELIVERED, "deleted")

    def _link(self, notice, tree, rel_path):
        target = notice.link_target
        tree.check_link(rel_path, target)
        with tree.parent(rel_path) as (fd, leaf):
            refuse_directory(fd, leaf, rel_path)
            try:
                if os.readlink(leaf, dir_fd=fd) == target:
                    return Outcome(Code.UNCHANGED, "link already in place")
            except OSError:
                pass
            tmp = temporary_name(leaf)
            os.symlink(target, tmp, dir_fd=fd)
            os.rename(tmp, leaf, src_dir_fd=fd, dst_dir_fd=fd)
        return Outcome(Code.DELIVERED, f"linked to {target}")


def _open_temporary(fd, leaf):
    """(name, fd) of the one temporary file a whole download of `leaf` is written to, ours
    alone while we hold its lock.  A name of its own per leaf, not a random one, so that
    what an instance killed mid-download left there is taken over (continued, or
    overwritten) when its notice comes back, never left behind; a live writer of the same
    leaf holds the lock, and this attempt is tried again later."""
    tmp = temporary_name(leaf, WRITING)
    # Read and write: a prefix left there is read again into the checksum (dd.delivery.resume).
    out_fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=fd)
    try:
        try:
            fcntl.flock(out_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransferError(f"{leaf}: another instance is writing it now") from None
        mine = os.fstat(out_fd)
        if not stat.S_ISREG(mine.st_mode) or mine.st_nlink != 1:
            raise PathError(f"{tmp!r} is not a plain file of its own (a link was planted there)",
                            rule="symlink")
        if os.stat(tmp, dir_fd=fd, follow_symlinks=False).st_ino != mine.st_ino:
            raise TransferError(f"{leaf}: another instance is writing it now")  # we locked a removed one
    except BaseException:
        os.close(out_fd)
        raise
    return tmp, out_fd


def retrying(action, attempts):
    """action(), tried again after retryable transfer errors, `attempts` times in all."""
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except TransferError as error:
            if not error.retryable or attempt == attempts:
                raise
            log.warning("%s; trying again", error)
    raise AssertionError("attempts must be at least 1")


def refuse_directory(fd, leaf, rel_path):
    """A file or link never replaces a directory of the tree: a notice saying so is refused."""
    try:
        st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise PathError(f"{rel_path!r} is a directory here; a file cannot replace it", rule="is-a-directory")


class _NoProgress:
    """Progress nobody watches."""

    def begin(self, name, total):
        return self

    def advance(self, nbytes):
        pass

    def end(self):
        pass


NO_PROGRESS = _NoProgress()


@contextlib.contextmanager
def tracking(progress, name, total):
    """The transfer of `name` (`total` bytes) shown in flight (dd_ctl status, a bar) while it lasts."""
    tracker = progress.begin(name, total)
    try:
        yield tracker
    finally:
        tracker.end()


def _display(tree, rel_path):
    try:
        return tree.path(rel_path)
    except PathError:
        return os.path.join(tree.root, "<refused>")


def _sum_at(fd, leaf, method):
    """Checksum of `leaf` in directory `fd`, never through a symlink."""
    def opener(name, flags):
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
    return checksum.of_file(leaf, method, opener=opener)


class WholeMismatch(ChecksumMismatch):
    """Verified parts that do not make the announced file: the source announced parts of
    another file, and fetching one part again cannot help."""

    retryable = False
    code = Code.WHOLE_MISMATCH


def _continue_sum(fd, hasher, offset):
    """The hex digest of `hasher` continued over the open file `fd` from `offset` to its end."""
    buffer = memoryview(bytearray(checksum.BUFFER_SIZE))
    while n := os.preadv(fd, [buffer], offset):
        hasher.update(buffer[:n])
        offset += n
    return hasher.hexdigest()
