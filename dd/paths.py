"""The safe path builder: the only way a relative path from the wire becomes a file.

A `Tree` is a target directory.  Relative paths are refused, never cleaned up,
when they could leave it: '..' in any spelling (percent-encoded, Unicode
look-alikes), absolute paths, empty or '.' components, control characters.
Directories are walked from a directory handle, one component at a time, with
O_NOFOLLOW: a symlink planted anywhere below the tree cannot redirect a write.
"""
import contextlib
import errno
import os
import re
import stat
import unicodedata
import urllib.parse

from dd.errors import PathError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Mode bits never taken from the wire: setuid, setgid, sticky, world-writable.
UNSAFE_MODE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWOTH
MAX_PATH_BYTES = 4096
MAX_NAME_BYTES = 255


def _dot_spelling(component):
    """What the component means once every encoding a server might undo is undone."""
    if "%" not in component and component.isascii():
        return component.replace("\\", "/")  # nothing to decode; NFKC keeps ASCII as it is
    previous, text = None, component
    while text != previous:  # %252e%252e decodes twice
        previous, text = text, urllib.parse.unquote(text)
    return unicodedata.normalize("NFKC", text).replace("\\", "/")


def split(rel_path):
    """The components of a relative path, or PathError naming the rule it breaks."""
    if not isinstance(rel_path, str) or not rel_path:
        raise PathError("path is empty", rule="empty-path")
    if _CONTROL.search(rel_path):
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


def safe_mode(mode):
    """Permission bits to apply from a notice: never setuid/setgid/sticky/world-writable."""
    return None if mode is None else mode & 0o777 & ~UNSAFE_MODE_BITS


class Tree:
    """A target directory that files from the wire are written into, and only into."""

    def __init__(self, root):
        self.root = os.fspath(root)

    def __repr__(self):
        return f"Tree({self.root!r})"

    def __str__(self):
        return self.root

    def path(self, rel_path):
        """The filesystem path of `rel_path` inside the tree (for display and hooks)."""
        return os.path.join(self.root, *split(rel_path))

    @contextlib.contextmanager
    def parent(self, rel_path, create=True):
        """Yield (directory fd, leaf name) for rel_path, walking without following links."""
        components = split(rel_path)
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            os.makedirs(self.root, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for name in components[:-1]:
                child = self._open_directory(fd, name, rel_path, create)
                os.close(fd)
                fd = child
            yield fd, components[-1]
        finally:
            os.close(fd)

    @staticmethod
    def _open_directory(fd, name, rel_path, create):
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
            os.mkdir(name, 0o755, dir_fd=fd)
        return Tree._open_directory(fd, name, rel_path, create=False)


def localize(rel_path, *, strip=0, mirror=True, flatten=None):
    """Where a wire path lands inside a tree: `strip` leading directories removed,
    then the whole tree (mirror), the file name alone, or one name whose
    directories are joined by `flatten` ('/' keeps the tree)."""
    components = split(rel_path)[strip:]
    if not components:
        raise PathError(f"strip {strip} removes all of {rel_path!r}", rule="strip")
    if flatten and flatten != "/":
        return flatten.join(components)
    return "/".join(components) if mirror else components[-1]
