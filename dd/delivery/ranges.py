"""One file fetched over several connections at once, into one file (`parallel N`).

On a long round trip one TCP stream carries at most its window per round trip
(Linux's stock tcp_wmem lets 4 MiB be in flight: 80 MB/s at 50 ms); N streams carry N
windows.  The file is cut in pieces (see plan), handed out in order to N threads, each
fetching its piece with a range request on a connection of its own, writing it at its
offset, and asking for its next piece before this one has all arrived (see AHEAD).  The
whole file's checksum is computed meanwhile by the caller's thread, reading back (from the
page cache) what has arrived in order: the pieces are handed out in order, so it follows
close behind, and what is left to sum at the end is about the last pieces in flight.  A
piece that fails is taken up again from where it stopped, `attempts` times; the file is
then the caller's to verify and rename.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable
from typing import Optional

from dd.core.checksum import Digest
from dd.core.errors import TransferError
from dd.transfer import RangeReader

MiB = 1 << 20
#: Pieces are at least this big: each costs a request (and a round trip with nothing on the
#: way where the next cannot be asked for ahead: through a proxy) ...
PIECE_MIN = 4 * MiB
#: ... and at most this big.
PIECE_MAX = 64 * MiB
#: Bytes read, written and summed at a time.  Big: every call gives up the interpreter
#: lock and waits to take it back from the other threads (up to 5 ms each time), and the
#: thread summing must keep up with N streams.
CHUNK = 4 * MiB
#: A thread asks for its next piece when this much of its piece is still to come: more than
#: can be on the way (the server's send buffer, 4 MiB by default, and a round trip's worth on
#: the wire), so that over HTTP, where the request goes out at once on the same connection
#: (dd.transfer.http), the server has it before it runs out of this piece to send.
AHEAD = 16 * MiB
#: Seconds between ticks (broker heartbeats) while waiting for the next bytes.
WAIT = 0.5


def plan(start: int, end: int, streams: int) -> list[tuple[int, int]]:
    """(offset, length) of the pieces of bytes `start` to `end` over `streams` connections.
    Each is a (2 x streams)-th of what is left (whole MiB, within PIECE_MIN and PIECE_MAX):
    big first, few requests; small last, so that the streams end close together and little
    is left to sum once the last bytes arrive.  Not bigger: the sum waits for the first
    piece, which arrives at one stream's speed."""
    pieces = []
    while start < end:
        size = min(PIECE_MAX, max(PIECE_MIN, -(-(end - start) // (2 * streams) // MiB) * MiB), end - start)
        pieces.append((start, size))
        start += size
    return pieces


def worth_it(length: int, streams: int) -> bool:
    """Whether `length` bytes are fetched in pieces: at least two of them."""
    return streams > 1 and length >= 2 * PIECE_MIN


WAITING, RUNNING, DONE, FAILED, ABANDONED = "waiting", "running", "done", "failed", "abandoned"


class Abandoned(Exception):
    """A piece left unfinished: an earlier one failed."""


@dataclasses.dataclass
class _Piece:
    offset: int
    length: int
    written: int = 0
    state: str = WAITING


def fetch(new_reader: Callable[[], RangeReader], fd: int, *, start: int, end: int, hasher: Digest, streams: int,
          attempts: int = 3, tick: Optional[Callable[[], object]] = None,
          reached: Optional[Callable[[int], object]] = None, name: str = "source") -> str:
    """Fetch bytes `start` to `end` into the open file `fd` over `streams` connections;
    `hasher` has been fed bytes 0 to `start` and is fed the rest in order.  Returns its
    hex digest.  `reached(offset)` is told each time the bytes before `offset` are all in
    the file and summed (a resumable prefix).  Raises the TransferError of a piece that
    failed `attempts` times."""
    pieces = [_Piece(offset, length) for offset, length in plan(start, end, streams)]
    arrived = threading.Condition()
    handed = iter(pieces)
    failed: list[BaseException] = []

    def claim() -> Optional[_Piece]:
        with arrived:
            piece = None if failed else next(handed, None)
            if piece is not None:
                piece.state = RUNNING
            return piece

    def work() -> None:
        buffer = memoryview(bytearray(CHUNK))
        ahead: list[_Piece] = []    # the next piece, asked for while this one arrives

        def ask_ahead() -> None:
            piece = None if ahead else claim()
            if piece is not None:
                ahead.append(piece)
                reader.ask(piece.offset, piece.length)

        with contextlib.closing(new_reader()) as reader:
            piece = claim()
            while piece is not None:
                try:
                    _fetch_piece(reader, fd, piece, arrived, attempts, buffer, name, ask_ahead)
                    state = DONE
                except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
                    failed.append(error)
                    state = FAILED
                with arrived:
                    if piece.state is RUNNING:
                        piece.state = state
                    if state is FAILED:
                        for asked in ahead:   # never to be fetched: the summing thread must not wait for it
                            if asked.state is RUNNING:
                                asked.state = ABANDONED
                    arrived.notify_all()
                if state is FAILED:
                    return
                piece = ahead.pop() if ahead else claim()

    workers = [threading.Thread(target=work, name=f"dd-range-{n}", daemon=True)
               for n in range(min(streams, len(pieces)))]
    for worker in workers:
        worker.start()
    try:
        _follow(fd, pieces, arrived, failed, hasher, tick, reached)
    finally:
        # What is past the first piece missing is of no use to the next attempt: stop it.
        with arrived:
            failed.append(Abandoned())
            for piece in pieces:
                if piece.state is RUNNING:
                    piece.state = ABANDONED
        for worker in workers:
            worker.join()
    return hasher.hexdigest()


def _fetch_piece(reader, fd, piece, arrived, attempts, buffer, name, ask_ahead):
    """Fetch what is missing of `piece` into its place, taken up again where a failed
    attempt stopped; `ask_ahead()` once no more than AHEAD bytes of it are to come."""
    for attempt in range(1, attempts + 1):
        offset, left = piece.offset + piece.written, piece.length - piece.written
        try:
            with reader.open(offset, left) as data:
                while piece.written < piece.length:
                    if piece.length - piece.written <= AHEAD:
                        ask_ahead()
                    n = data.readinto(buffer[:piece.length - piece.written])
                    if not n:
                        raise TransferError(f"{name}: no data at byte {piece.offset + piece.written}")
                    for written in _written(fd, buffer[:n], piece.offset + piece.written):
                        with arrived:
                            if piece.state is ABANDONED:
                                raise Abandoned
                            piece.written += written
                            arrived.notify()
            return
        except TransferError as error:
            if not error.retryable or attempt == attempts:
                raise


def _written(fd, data, offset):
    """Write all of `data` at `offset`, yielding what each write wrote."""
    while data:
        n = os.pwrite(fd, data, offset)
        yield n
        data, offset = data[n:], offset + n


def _follow(fd, pieces, arrived, failed, hasher, tick, reached):
    """Sum the pieces in order as their bytes arrive, ticking while waiting."""
    buffer = memoryview(bytearray(CHUNK))
    ticked = time.monotonic()
    for piece in pieces:
        summed = 0
        while summed < piece.length:
            if tick is not None and time.monotonic() - ticked >= WAIT:
                tick()
                ticked = time.monotonic()
            with arrived:
                # After a failure the pieces in flight still finish, and are summed: the
                # prefix kept for the next attempt ends at the first piece missing.
                while piece.written == summed and (piece.state is RUNNING or piece.state is WAITING
                                                    and not failed):
                    if not arrived.wait(WAIT) and tick is not None:
                        tick()
                        ticked = time.monotonic()
                if piece.written == summed:
                    raise failed[0]
                ready = piece.written
            while summed < ready:
                n = os.preadv(fd, [buffer[:min(len(buffer), ready - summed)]], piece.offset + summed)
                if not n:
                    raise TransferError(f"{name_of(fd)}: the file being written shrank",
                                        fix="another program is writing the partial file")
                hasher.update(buffer[:n])
                summed += n
        if reached is not None:
            reached(piece.offset + piece.length)


def name_of(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return f"file descriptor {fd}"
