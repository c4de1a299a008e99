"""A file on disk → the notice(s) announcing it, below a configuration's post_base_dir.

dd_post and dd_watch announce files the same way: the relative path from
post_base_dir (refusing paths outside it, or reached through a symlink that
leaves it), links as links, deletes, checksums of the content; a file larger
than `blocksize` as one notice per part (see dd.core.parts).
"""
import dataclasses
import os
import stat

from dd.core import checksum, parts
from dd.core.errors import DDError, NoticeError, PathError, TransferError
from dd.core.notice import Checksum, Notice, Op, Part, check_name, from_timestamp, now
from dd.transfer import ReadStream
from dd.transfer.copy import Nowhere, copy

_O_PATH = getattr(os, "O_PATH", 0)     # Linux: a handle on a path, to ask the kernel its real name


class Announcer:
    """Turns paths below cfg.post_base_dir into notices with cfg's source, clusters and checksum."""

    def __init__(self, cfg, progress=None):
        self.cfg = cfg
        self.progress = progress    # progress(nbytes) as files are summed, for a progress bar
        self.base_dir = os.path.abspath(cfg.post_base_dir)
        self.real_base = os.path.realpath(self.base_dir)
        self._prefix = os.path.join(self.base_dir, "")
        self._real_prefix = os.path.join(self.real_base, "")
        # Read once: a watcher announces thousands of files a second with them.
        self._common = dict(base_url=str(cfg.post_base_url), source=cfg.source or "",
                            from_cluster=cfg.cluster or "", to_clusters=tuple(cfg.to_clusters or ()),
                            readers=tuple(cfg.readers or ()))
        self._method, self._blocksize = cfg.checksum, cfg.blocksize

    def rel_path(self, path):
        """`path` relative to post_base_dir; PathError when it is not below it."""
        if path.startswith(self._prefix) and os.path.normpath(path) == path:
            rel_path = path[len(self._prefix):]     # what relpath says, in a fifth of its time
        else:
            rel_path = os.path.relpath(path, self.base_dir)
        if rel_path in (".", "..") or rel_path.startswith("../"):
            raise PathError(f"{path} is outside post_base_dir {self.base_dir}",
                            fix="set post_base_dir to a directory above it")
        parent = real_directory(os.path.dirname(path))
        if parent != self.real_base and not parent.startswith(self._real_prefix):
            raise PathError(f"{path} is reached through a symlink that leaves post_base_dir {self.base_dir}")
        return announceable(rel_path)

    def notices(self, path, *, deleted=False, renamed_from=None, st=None):
        """The notices announcing `path` as it is now (or its deletion; or its content, moved
        from `renamed_from`); raises PathError or OSError when it cannot be announced.
        `st`: os.lstat(path), when the caller has just taken it."""
        notices = self._notices(path, deleted, st)
        if renamed_from is None:
            return notices
        if notices[0].op is Op.WRITE:
            return [dataclasses.replace(n, op=Op.RENAME, rename_from=self.rel_path(renamed_from)) for n in notices]
        notice, = notices
        # A link has no content to move: the old name goes, the link is made anew.
        return [*self._notices(renamed_from, True), notice]

    def _notices(self, path, deleted, st=None):
        rel_path = self.rel_path(path)
        template = self._common
        common = dict(template, pubtime=now(), rel_path=rel_path, to_clusters=list(template["to_clusters"]),
                      readers=list(template["readers"]))
        if deleted:
            return [Notice(op=Op.DELETE, **common)]
        st = st or os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return [Notice(op=Op.LINK, link_target=announceable(os.readlink(path), "link target"),
                           mtime=from_timestamp(st.st_mtime),
                           **common)]
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"{path} is not a regular file")
        method = self._method
        block_size = parts.choose_block_size(st.st_size, self._blocksize)
        if block_size and parts.layout(st.st_size, block_size)[0] > parts.MAX_BLOCK_COUNT:
            raise DDError(f"{path}: blocksize {block_size} cuts it into more than {parts.MAX_BLOCK_COUNT} parts",
                          fix="raise blocksize, or use 0 to choose it automatically")
        sums = part_sums(path, rel_path, method, st.st_size, block_size, progress=self.progress)
        whole = Notice(op=Op.WRITE, size=st.st_size, checksum=Checksum(method, sums.pop()),
                       mtime=from_timestamp(st.st_mtime), atime=from_timestamp(st.st_atime),
                       mode=st.st_mode & 0o7777, **common)
        if block_size is None:
            return [whole]
        count, remainder = parts.layout(st.st_size, block_size)
        return [dataclasses.replace(whole, part=Part(block_size, count, remainder, n, Checksum(method, value)))
                for n, value in enumerate(sums)]


#: What the source says, and how to fix it, of each rule receivers judge a name by (check_name).
_REFUSED = {"encoding": ("is not UTF-8, as notices need", "rename it in UTF-8, e.g. convmv -f latin1 -t utf8 --notest"),
            "control-character": ("contains a control character, which receivers refuse", "rename it")}


def announceable(name, what="name"):
    """`name` as a notice carries it; PathError when no receiver would take it (the rules
    of dd.core.notice.check_name): bytes that are not UTF-8 (a Latin-1 name), which could
    be neither sent nor fetched by that name, or a control character (a line break)."""
    try:
        return check_name(name, what)
    except NoticeError as error:
        says, fix = _REFUSED[error.rule]
        raise PathError(f"its {what} {says}", fix=fix, rule=error.rule) from None


def real_directory(path):
    """os.path.realpath of a directory; on Linux asked of the kernel, which resolves the whole
    path at once (a third of realpath's time: dd_watch asks it for every file)."""
    if _O_PATH:
        try:
            fd = os.open(path, _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            pass    # realpath says what it can of a path that is gone or not a directory
        else:
            try:
                real = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                real = None    # no /proc
            finally:
                os.close(fd)
            if real and real.startswith("/") and not real.endswith(" (deleted)"):
                return real
    return os.path.realpath(path)


#: Whole files from this size on are summed by copy(), which reads ahead while it hashes;
#: below it the helper threads cost more than they save.
OVERLAP_FROM = 4 << 20


def part_sums(path, rel_path, method, size, block_size, progress=None):
    """[checksum of each part..., checksum of the whole file], reading the file once
    (one value, the whole file's, when it is not split); progress(nbytes) as it reads."""
    spans = parts.spans(block_size, *parts.layout(size, block_size)) if block_size else []
    if method in ("name", "none"):
        return [checksum.of_name(rel_path) if method == "name" else ""] * (len(spans) + 1)
    if not spans and size < OVERLAP_FROM:
        value = checksum.of_file(path, method)
        if progress is not None:
            progress(size)
        return [value]
    whole, sums = checksum.new(method), []
    changed = "the file changed while being summed; post it again once written"
    try:
        for offset, length in spans or [(0, size)]:
            part = checksum.new(method) if spans else None
            # A stream of its own per part: closing a ReadStream closes the file under it.
            with open(path, "rb", buffering=0) as f:
                f.seek(offset)
                # copy() hashes on lanes of its own while it reads ahead: a part's hasher beside the whole's.
                copy(ReadStream(f, length, path), Nowhere(), length=length, hasher=part or whole,
                     also_hash=[whole] if part else [], progress=progress, name=path)
            if part:
                sums.append(part.hexdigest())
        if os.stat(path).st_size > size:
            raise DDError(f"cannot checksum {path}: it has more than the {size} bytes it had", fix=changed)
    except TransferError as error:
        raise DDError(f"cannot checksum {path}: {error.message}", fix=changed) from None
    except OSError as error:
        raise DDError(f"cannot checksum {path}: {error.strerror or error}") from None
    return sums + [whole.hexdigest()]
