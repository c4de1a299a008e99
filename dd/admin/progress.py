"""Progress bars where a person waits: dd_post of a big tree or file, dd_subscribe foreground.

Shown only when the stream is a terminal; a pipe or a log file gets nothing.  Log lines
written while bars are shown go above them (tqdm's logging redirection), not through them.
tqdm is imported only for a terminal: its import costs more than dd_post's whole start-up.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Optional

from dd.store.metrics import InFlight, Progress

if TYPE_CHECKING:
    from tqdm import tqdm


class Bars:
    """A dd.store.metrics.Progress: one bar per transfer, in bytes, removed when it ends."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def begin(self, name: str, total: Optional[int]) -> _Bar:
        from tqdm import tqdm
        return _Bar(tqdm(total=total, desc=_short(name), unit="B", unit_scale=True, unit_divisor=1024,
                         leave=False, file=self.stream, dynamic_ncols=True, mininterval=0.2))


class _Bar:
    """A dd.store.metrics.Tracker on a tqdm bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def advance(self, nbytes: int) -> None:
        self.bar.update(nbytes)

    def end(self) -> None:
        self.bar.close()


def _short(name: str, width: int = 40) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def on_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def shown(stream: IO[str]) -> Iterator[Optional[Progress]]:
    """Bars on `stream` when it is a terminal (None otherwise), with dd's log lines kept
    clear of them while they may be shown."""
    if not on_terminal(stream):
        yield None
        return
    from tqdm.contrib.logging import logging_redirect_tqdm
    with logging_redirect_tqdm():
        yield Bars(stream)


def describe(transfer: InFlight) -> str:
    """A transfer in flight in a few words: file (done of total, rate, time left)."""
    import humanize

    def size(nbytes: int) -> str:
        return humanize.naturalsize(nbytes, binary=True)
    total = "?" if transfer.total is None else size(transfer.total)
    left = "" if transfer.eta is None else f", {humanize.naturaldelta(transfer.eta)} left"
    return f"{transfer.file} ({size(transfer.done)} of {total}, {size(int(transfer.rate))}/s{left})"
