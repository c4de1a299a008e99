"""Checksums by method name, as the lowercase hex values notices carry.

"name" sums the relative path instead of the data, for sources that announce
by name only; "none" means no checksum and its value is "".
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

import xxhash

from dd.core.errors import DDError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, StrPath

METHODS = ("sha512", "sha256", "sha384", "sha3-256", "sha3-384", "sha3-512", "md5", "xxh128", "name", "none")
DEFAULT = "sha512"
BUFFER_SIZE = 1 << 20
SMALLEST_BUFFER = 1 << 16


class Digest(Protocol):
    """What hashlib's and xxhash's hash objects have in common."""

    def update(self, data: ReadableBuffer, /) -> None: ...

    def hexdigest(self) -> str: ...


_CONTENT: dict[str, Callable[[], Digest]] = {
    "sha512": hashlib.sha512,
    "sha256": hashlib.sha256,
    # The rest of what WIS2 notifications may carry (WNM properties.integrity).
    "sha384": hashlib.sha384,
    "sha3-256": hashlib.sha3_256,
    "sha3-384": hashlib.sha3_384,
    "sha3-512": hashlib.sha3_512,
    # md5 checks integrity, not security: allowed even where FIPS forbids it.
    "md5": lambda: hashlib.md5(usedforsecurity=False),
    "xxh128": xxhash.xxh3_128,
}


class MethodError(DDError):
    rule = "checksum-method"


def _check(method: str) -> None:
    if method not in METHODS:
        raise MethodError(f"unknown checksum method {method!r}",
                          fix=f"use one of: {', '.join(METHODS)}")


class Hasher:
    """An incremental checksum of data; for "none" it ignores data and its value is ""."""

    def __init__(self, method: str) -> None:
        self.method = method
        self._hash = _CONTENT[method]() if method != "none" else None

    def update(self, data: ReadableBuffer) -> None:
        if self._hash is not None:
            self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest() if self._hash is not None else ""


def new(method: str) -> Hasher:
    _check(method)
    if method == "name":
        raise MethodError("checksum method 'name' sums the path, not the data",
                          fix="use checksum.of_name(rel_path)")
    return Hasher(method)


def of_name(rel_path: str) -> str:
    return hashlib.sha512(rel_path.encode("utf-8")).hexdigest()


_PathT = TypeVar("_PathT", bound="StrPath")


def of_file(path: _PathT, method: str, offset: int = 0, length: int | None = None,
            opener: Callable[[_PathT, int], int] | None = None) -> str:
    """Checksum of a file, or of `length` bytes from `offset`, read in 1 MiB pieces.

    `opener` is open()'s: it lets callers open relative to a directory handle."""
    hasher = new(method)
    if method == "none":
        return ""
    remaining = length
    try:
        # os-level calls: the file object's own fstat, seek and wrapping cost as much as
        # summing a small file (dd_watch sums thousands of those a second).
        flags = os.O_RDONLY | os.O_CLOEXEC
        fd = opener(path, flags) if opener else os.open(path, flags)
        try:
            if offset:
                os.lseek(fd, offset, os.SEEK_SET)
            # A buffer the size of what is to be read, up to 1 MiB: a fresh 1 MiB costs more
            # than summing a small file.
            expected = os.fstat(fd).st_size - offset if length is None else length
            size = min(BUFFER_SIZE, max(expected + 1, SMALLEST_BUFFER))
            view = memoryview(bytearray(size))
            while remaining is None or remaining > 0:
                n = os.readv(fd, [view if remaining is None else view[:min(remaining, size)]])
                if not n:
                    break
                hasher.update(view[:n])
                if remaining is not None:
                    remaining -= n
        finally:
            os.close(fd)
    except OSError as error:
        raise DDError(f"cannot checksum {path}: {error.strerror or error}") from error
    if remaining and length is not None:
        raise DDError(f"cannot checksum {path}: it ends before byte {offset + length}",
                      fix="the file is shorter than the range asked; it may have changed")
    return hasher.hexdigest()


def verifiable(method: str) -> bool:
    """Whether a value of this method can be checked against received data."""
    _check(method)
    return method not in ("none", "name")
