"""The safe path builder: the only way a relative path from the wire becomes a file.

A `Tree` is a target directory.  Relative paths are refused, never cleaned up,
when they could leave it: '..' in any spelling (percent-encoded, Unicode
look-alikes), absolute paths, empty or '.' components, control characters.
Directories are walked from a directory handle, one component at a time, with
O_NOFOLLOW: a symlink planted anywhere below the tree cannot redirect a write.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import unicodedata
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, NoReturn

from dd.core.errors import PathError
from dd.core.notice import CONTROL_CHARACTER

if TYPE_CHECKING:
    from _typeshed import StrPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode bits never taken from the wire: setuid, setgid, sticky, world-writable.
UNSAFE_MODE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def _dot_spelling(component: str) -> str:
    """What the component means once every encoding a server might undo is undone."""
    if "%" not in component and component.isascii():
        return component.replace("\\", "/")  # nothing to decode; NFKC keeps ASCII as it is
    previous, text = None, component
    while text != previous:  # %252e%252e decodes twice
        previous, text = text, urllib.parse.unquote(text)
    return unicodedata.normalize("NFKC", text).replace("\\", "/")


def split(rel_path: str) -> list[str]:
    """The components of a relative path, or PathError naming the rule it breaks."""
    if not isinstance(rel_path, str) or not rel_path:
        raise PathError("path is empty", rule="empty-path")
    if CONTROL_CHARACTER.search(rel_path):
        raise PathError(f"path contains a control character: {rel_path!r}", rule="control-character")
    if rel_path.startswith("/") or rel_path.startswith("\\"):
        raise PathError(f"path is absolute: {rel_path!r}", rule="absolute-path")
    if len(rel_path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise PathError("path is longer than 4096 bytes", rule="long-path")
    components = rel_path.split("/")
    for component in components:
        meaning = _dot_spelling(component)
        if component in ("", "."):
            raise PathError(f"path has an empty or '.' component: {rel_path!r}", rule="empty-component")
        if any(part in ("..", ".") for part in meaning.split("/")) or meaning.startswith("/"):
            raise PathError(f"path climbs out of its directory ('..' in some spelling): {rel_path!r}",
                            rule="dot-dot")
        if len(component.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
            raise PathError(f"path component is longer than 255 bytes: {component[:40]!r}...",
                            rule="long-name")
    return components


def safe_mode(mode: int | None) -> int | None:
    """Permission bits to apply from a notice: never setuid/setgid/sticky/world-writable."""
    return None if mode is None else mode & 0o777 & ~UNSAFE_MODE_BITS


#: Symbolic links followed while judging one link target, as the kernel's own limit.
MAX_LINK_HOPS = 40


class Tree:
    """A target directory that files from the wire are written into, and only into.

    `namespace` (components below `root`) confines the tree further: every path acted
    on, and every link target, stays inside root/namespace.  A pump gives each source
    its own (dd.pump.namespace), so one source's notices cannot touch another's files.
    `private_group` (a gid, or -1 for our own group) marks a tree of private data:
    its directories are made 0750 and its files 0640, owned by that group, the data
    server's, whatever mode a notice asks for."""

    def __init__(self, root: StrPath, *, namespace: Iterable[str] = (), private_group: int | None = None) -> None:
        self.root = os.fspath(root)
        self.namespace = tuple(namespace)
        self.private_group = private_group

    def __repr__(self) -> str:
        return f"Tree({self.root!r}, namespace={self.namespace!r})"

    def __str__(self) -> str:
        return os.path.join(self.root, *self.namespace)

    @property
    def dir_mode(self) -> int:
        return 0o755 if self.private_group is None else 0o750

    def file_mode(self, mode: int | None) -> int:
        """The permission bits a file delivered into this tree gets, `mode` being the notice's."""
        mode = safe_mode(mode)
        mode = 0o644 if mode is None else mode
        return mode if self.private_group is None else mode & 0o640

    def restrict(self, fd: int) -> None:
        """Give a private tree's file or directory (an open fd) the data server's group."""
        group = self.private_group
        if group is not None and group != -1 and os.fstat(fd).st_gid != group:
            os.fchown(fd, -1, group)

    def path(self, rel_path: str) -> str:
        """The filesystem path of `rel_path` inside the tree (for display and hooks)."""
        return os.path.join(self.root, *self.namespace, *split(rel_path))

    @contextlib.contextmanager
    def parent(self, rel_path: str, create: bool = True) -> Iterator[tuple[int, str]]:
        """Yield (directory fd, leaf name) for rel_path, walking without following links."""
        components = split(rel_path)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            os.makedirs(self.root, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in (*self.namespace, *components[:-1]):
                child = self._open_directory(fd, name, rel_path, create)
                os.close(fd)
                fd = child
            yield fd, components[-1]
        finally:
            os.close(fd)

    def _open_directory(self, fd: int, name: str, rel_path: str, create: bool) -> int:
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise PathError(f"a parent of {rel_path!r} is a symlink or not a directory",
                                rule="symlink") from None
            raise
        with contextlib.suppress(FileExistsError):  # another instance made it first
            os.mkdir(name, self.dir_mode, dir_fd=fd)
        child = self._open_directory(fd, name, rel_path, create=False)
        if self.private_group is not None:
            os.fchmod(child, self.dir_mode)     # the umask may have narrowed it; never widened
            self.restrict(child)
        return child

    def check_link(self, rel_path: str, target: str) -> None:
        """Refuse a link at `rel_path` whose `target` leaves the tree's namespace.

        The target is resolved as the kernel would, physically: through the directories
        and links the tree holds now, never by counting '..' in its text, so a link
        through another link ('d/up' -> '..') is seen for what it is.  A part of the target
        not in the tree yet is taken as written, and may not be followed by '..': what it
        becomes later must not decide where this link leads."""
        def refuse(why: str) -> NoReturn:
            raise PathError(f"link target {target!r} of {rel_path!r} {why}", rule="link-target")

        if target.startswith("/"):
            refuse("is absolute")
        position = split(rel_path)[:-1]     # where resolution stands, below the namespace
        pending = target.split("/")
        hops, settled = 0, True
        while pending:
            name = pending.pop(0)
            if name in ("", "."):
                continue
            if name == "..":
                if not settled:
                    refuse("climbs out of a directory the tree does not hold yet")
                if not position:
                    refuse("points outside the tree")
                position.pop()
                continue
            if settled:
                kind, value = self._entry(position, name)
                if kind == "link":
                    hops += 1
                    if hops > MAX_LINK_HOPS or value.startswith("/"):
                        refuse("goes through an absolute link or too many links")
                    pending[:0] = value.split("/")
                    continue
                settled = kind == "directory"
            position.append(name)

    def _entry(self, position: list[str], name: str) -> tuple[str, str]:
        """(kind, link target or '') of a name below the namespace: kind is directory, link, other or missing."""
        try:
            with self.parent("/".join([*position, name]), create=False) as (fd, leaf):
                st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    return "link", os.readlink(leaf, dir_fd=fd)
                return ("directory" if stat.S_ISDIR(st.st_mode) else "other"), ""
        except (FileNotFoundError, NotADirectoryError):
            return "missing", ""


def localize(rel_path: str, *, strip: int = 0, mirror: bool = True, flatten: str | None = None) -> str:
    """Where a wire path lands inside a tree: `strip` leading directories removed,
    then the whole tree (mirror), the file name alone, or one name whose
    directories are joined by `flatten` ('/' keeps the tree)."""
    components = split(rel_path)[strip:]
    if not components:
        raise PathError(f"strip {strip} removes all of {rel_path!r}", rule="strip")
    if flatten and flatten != "/":
        return flatten.join(components)
    return "/".join(components) if mirror else components[-1]
