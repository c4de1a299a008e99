"""Parts arithmetic: how a file of a given size splits into blocks.

A file of `size` bytes in blocks of `block_size` has
``block_count = ceil(size / block_size)`` blocks; every block is full except
the last, which holds ``remainder = size % block_size`` bytes when that is not
zero.  So ``size = (block_count - 1) * block_size + remainder`` when the
remainder is non-zero, and ``block_count * block_size`` when it is zero.
This module is the only place that knows it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from dd.core.errors import NoticeError

if TYPE_CHECKING:
    from dd.core.notice import Part

MiB = 1 << 20
#: With `blocksize 0`, files up to this size travel whole.
AUTO_WHOLE_LIMIT = 256 * MiB
#: With `blocksize 0`, larger files are cut so that there are at most this many parts ...
AUTO_MAX_PARTS = 64
#: ... of at least this size each (whole MiB).
AUTO_MIN_BLOCK = 64 * MiB
#: Most parts one file may have: the receiver keeps a state byte per part and reads them all.
MAX_BLOCK_COUNT = 1 << 20


def layout(size: int, block_size: int) -> tuple[int, int]:
    """(block_count, remainder) for a file of `size` bytes cut in `block_size` blocks."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    count, remainder = divmod(size, block_size)
    return (count + 1, remainder) if remainder else (max(count, 1), 0)


def size_of(block_size: int, block_count: int, remainder: int) -> int:
    """The whole file's size, from its layout."""
    if remainder:
        return (block_count - 1) * block_size + remainder
    return block_count * block_size


def span(block_size: int, block_count: int, remainder: int, block_number: int) -> tuple[int, int]:
    """(offset, length) of one block."""
    last = block_number == block_count - 1
    return block_number * block_size, (remainder if last and remainder else block_size)


def spans(block_size: int, block_count: int, remainder: int) -> list[tuple[int, int]]:
    """(offset, length) of every block, in order."""
    return [span(block_size, block_count, remainder, n) for n in range(block_count)]


def choose_block_size(size: int, blocksize_option: int) -> int | None:
    """The block size to post `size` bytes with, or None to send the file whole.

    `blocksize 1` never splits, `blocksize 0` decides by size (see AUTO_*),
    anything else is a fixed block size.
    """
    if blocksize_option == 1:
        return None
    if blocksize_option == 0:
        if size <= AUTO_WHOLE_LIMIT:
            return None
        per_part = -(-size // AUTO_MAX_PARTS)
        blocksize_option = max(AUTO_MIN_BLOCK, -(-per_part // MiB) * MiB)
    return blocksize_option if size > blocksize_option else None


def check(part: Part, size: int | None) -> None:
    """Refuse part metadata that cannot describe `size` bytes."""
    if part.block_size <= 0:
        raise NoticeError("part block_size must be positive", rule="parts")
    if not 1 <= part.block_count <= MAX_BLOCK_COUNT:
        raise NoticeError(f"part block_count {part.block_count} is not between 1 and {MAX_BLOCK_COUNT}",
                          fix="post with a larger blocksize", rule="parts")
    if not 0 <= part.block_number < part.block_count:
        raise NoticeError(
            f"part block_number {part.block_number} is not below block_count {part.block_count}",
            rule="parts")
    if not 0 <= part.remainder < part.block_size:
        raise NoticeError(f"part remainder {part.remainder} is not below block_size {part.block_size}",
                          rule="parts")
    if size is not None and size_of(part.block_size, part.block_count, part.remainder) != size:
        raise NoticeError(
            f"parts do not add up: {part.block_count} blocks of {part.block_size} "
            f"with remainder {part.remainder} are not {size} bytes", rule="parts")
