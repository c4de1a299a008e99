"""Files replaced whole: a reader sees the old content or the new, never half of it."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import StrPath


def replace(path: StrPath, text: str, *, mode: int = 0o644, group: int = -1) -> None:
    """Make `path` hold `text`: written beside it under a hidden name, then renamed over it.
    `group` (a gid) is given to the new file when it is not -1; no link is followed."""
    directory, name = os.path.split(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            if group != -1:
                os.fchown(out.fileno(), -1, group)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
