"""The entries of a local tree, as dd announces, watches and expires them."""
from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import StrPath


def entries(root: StrPath) -> Iterator[str]:
    """The path of every file and symbolic link below `root`, directory by directory in
    name order, never following a link: a link to a directory is one entry, like a file."""
    for top, directories, files in os.walk(root):
        directories.sort()
        links = [d for d in directories if os.path.islink(os.path.join(top, d))]
        yield from (os.path.join(top, name) for name in sorted(files) + links)
