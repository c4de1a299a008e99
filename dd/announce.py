"""A file on disk → the notice(s) announcing it, below a configuration's post_base_dir.

dd_post and dd_watch announce files the same way: the relative path from
post_base_dir (refusing paths outside it, or reached through a symlink that
leaves it), links as links, deletes, checksums of the content.
"""
import dataclasses
import os
import stat

from dd import checksum
from dd.errors import PathError
from dd.notice import Checksum, Notice, Op, from_timestamp, now


class Announcer:
    """Turns paths below cfg.post_base_dir into notices with cfg's source, clusters and checksum."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.base_dir = os.path.abspath(cfg.post_base_dir)
        self.real_base = os.path.realpath(self.base_dir)

    def rel_path(self, path):
        """`path` relative to post_base_dir; PathError when it is not below it."""
        rel_path = os.path.relpath(path, self.base_dir)
        if rel_path in (".", "..") or rel_path.startswith("../"):
            raise PathError(f"{path} is outside post_base_dir {self.base_dir}",
                            fix="set post_base_dir to a directory above it")
        parent = os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([parent, self.real_base]) != self.real_base:
            raise PathError(f"{path} is reached through a symlink that leaves post_base_dir {self.base_dir}")
        return rel_path

    def notices(self, path, *, deleted=False, renamed_from=None):
        """The notices announcing `path` as it is now (or its deletion; or its content, moved
        from `renamed_from`); raises PathError or OSError when it cannot be announced."""
        notice = self._notice(path, deleted)
        if renamed_from is None:
            return [notice]
        if notice.op is Op.WRITE:
            return [dataclasses.replace(notice, op=Op.RENAME, rename_from=self.rel_path(renamed_from))]
        # A link has no content to move: the old name goes, the link is made anew.
        return [self._notice(renamed_from, True), notice]

    def _notice(self, path, deleted):
        rel_path = self.rel_path(path)
        cfg = self.cfg
        common = dict(pubtime=now(), base_url=str(cfg.post_base_url), rel_path=rel_path, source=cfg.source or "",
                      from_cluster=cfg.cluster or "", to_clusters=list(cfg.to_clusters or ()),
                      readers=list(cfg.readers or ()))
        if deleted:
            return Notice(op=Op.DELETE, **common)
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return Notice(op=Op.LINK, link_target=os.readlink(path), mtime=from_timestamp(st.st_mtime),
                          **common)
        if not stat.S_ISREG(st.st_mode):
            raise PathError(f"{path} is not a regular file")
        method = cfg.checksum
        value = checksum.of_name(rel_path) if method == "name" else checksum.of_file(path, method)
        return Notice(op=Op.WRITE, size=st.st_size, checksum=Checksum(method, value),
                      mtime=from_timestamp(st.st_mtime), atime=from_timestamp(st.st_atime),
                      mode=st.st_mode & 0o7777, **common)
