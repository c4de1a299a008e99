"""The one copy loop every transfer goes through: checksum, rate limit and
keep-alive ticks happen here, while the bytes pass, never in a second pass."""
import collections
import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Optional, Protocol, Union

from dd.core.checksum import Digest
from dd.core.errors import TransferError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

CHUNK_SIZE = 1 << 20
TICK_INTERVAL = 0.5
RATE_SLACK = 0.1
#: Chunks at least this big are hashed on a helper thread while being written.
OVERLAP_MIN = 256 << 10


#: Big chunks in flight per copy: read ahead while earlier ones are hashed and written.
RING = 4

#: What one read gives: a piece of the caller's buffer, or bytes of a source without readinto.
Chunk = Union[bytes, memoryview]


class Source(Protocol):
    """What copy reads: a binary file or stream (its readinto, when it has one, is used instead)."""

    def read(self, size: int, /) -> Optional[bytes]: ...


class Sink(Protocol):
    """What copy writes to: a binary file, buffered or not."""

    def write(self, data: "ReadableBuffer", /) -> Optional[int]: ...


class Nowhere:
    """A sink for bytes that are only hashed: summing a file, checking what was sent."""

    @staticmethod
    def write(data: "ReadableBuffer", /) -> int:
        return len(memoryview(data))


class _Lanes:
    """One thread per hasher and one for the writes: each lane does its chunks in order,
    all lanes at once, while the copy reads ahead into a ring of buffers."""

    def __init__(self, hashers: list[Digest], dst: Sink) -> None:
        self.work: list[Callable[[Chunk], None]] = [h.update for h in hashers]
        self.work.append(lambda data: _write_all(dst, data))
        self.lanes = [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dd-copy")
                      for _ in self.work]

    def submit(self, data: Chunk) -> list["concurrent.futures.Future[None]"]:
        return [lane.submit(work, data) for lane, work in zip(self.lanes, self.work)]

    def close(self) -> None:
        for lane in self.lanes:
            lane.shutdown()


@dataclasses.dataclass(frozen=True)
class CopyResult:
    nbytes: int
    checksum: Optional[str]   # hexdigest of the hasher given, else None


class _Limiter:
    """Paces all copies of the process together: each chunk books its time
    after the previous booking, so idle periods earn a burst of RATE_SLACK
    seconds at most, just enough that the time spent copying each chunk
    (and oversleeping) is not lost from the rate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._booked_until = 0.0

    def wait_for(self, nbytes: int, rate: float) -> float:
        """Seconds to wait so that these bytes keep the process at `rate` bytes/s."""
        with self._lock:
            now = time.monotonic()
            self._booked_until = max(self._booked_until, now - RATE_SLACK) + nbytes / rate
            return self._booked_until - now


_limiter = _Limiter()


def copy(src: Source, dst: Sink, *, length: Optional[int] = None, hasher: Optional[Digest] = None,
         also_hash: Iterable[Digest] = (), rate_max: float = 0, tick: Optional[Callable[[], object]] = None,
         progress: Optional[Callable[[int], object]] = None, chunk_size: int = CHUNK_SIZE,
         name: str = "source") -> CopyResult:
    """Copy `src` (readable) to `dst` (a writable binary file, buffered or not).
    `hasher` gives the result's checksum; `also_hash` are more hashers fed the
    same bytes side by side (the caller reads their digests).
    With `length`, a source that ends early or has more is a TransferError
    naming `name`.  `tick()` is called about every 0.5 s, also
    while sleeping for `rate_max`, so a caller can keep a connection alive;
    `progress(nbytes)` after each chunk read, for a progress bar or status."""
    # A small file needs no 1 MiB buffer: allocating and zeroing it cost more than the copy.
    size = chunk_size if length is None else max(1, min(chunk_size, length))
    readinto = getattr(src, "readinto", None)
    hashers = ([hasher] if hasher is not None else []) + list(also_hash)
    nbytes = 0
    last_tick = time.monotonic()
    # Big chunks are hashed and written on lanes of their own while the next chunks are read
    # into the other buffers of a ring: hashlib, writes and socket reads all release the GIL,
    # so a copy runs at the speed of the slowest of the three, not of their sum.
    buffers = [memoryview(bytearray(size))]
    # Per big chunk: its futures, oldest first.
    in_flight: collections.deque[list[concurrent.futures.Future[None]]] = collections.deque()
    lanes = None

    def ticking() -> None:
        nonlocal last_tick
        if tick is not None and time.monotonic() - last_tick >= TICK_INTERVAL:
            tick()
            last_tick = time.monotonic()

    def settle(keep: int) -> None:
        while len(in_flight) > keep:
            for each in in_flight.popleft():
                each.result()

    try:
        while length is None or nbytes < length:
            want = chunk_size if length is None else min(chunk_size, length - nbytes)
            data: Optional[Chunk]
            if readinto is not None:
                view = buffers[0]
                data = view[:readinto(view[:want]) or 0]
            else:
                data = src.read(want)
            if not data:
                break
            if len(data) >= OVERLAP_MIN:
                lanes = lanes or _Lanes(hashers, dst)
                in_flight.append(lanes.submit(data))
                if readinto is not None:
                    buffers.append(buffers.pop(0))
                    if len(buffers) < RING:
                        buffers.insert(0, memoryview(bytearray(size)))
                settle(RING - 1)  # the oldest chunk's buffer, read into next, is free again
            else:
                settle(0)
                for h in hashers:
                    h.update(data)
                _write_all(dst, data)
            nbytes += len(data)
            if progress is not None:
                progress(len(data))
            if rate_max:
                _sleep(_limiter.wait_for(len(data), rate_max), ticking)
            ticking()
        settle(0)
    finally:
        # Never leave a lane writing into a file or buffer the caller is about to drop.
        for futures in in_flight:
            for each in futures:
                each.exception()
        if lanes:
            lanes.close()

    if length is not None:
        if nbytes < length:
            raise TransferError(f"{name}: ended after {nbytes} of {length} bytes",
                                fix="the file is shorter than announced; it may be changing")
        if src.read(1):
            raise TransferError(f"{name}: has more than the {length} bytes announced",
                                fix="the file is longer than announced; it may be changing")
    return CopyResult(nbytes, hasher.hexdigest() if hasher is not None else None)


def _write_all(dst: Sink, data: Chunk) -> None:
    # Unbuffered files may write part of what they are given; None means all (paramiko).
    while data:
        written = dst.write(data)
        if written is None:
            return
        data = data[written:]


def _sleep(seconds: float, ticking: Callable[[], None]) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, TICK_INTERVAL))
        ticking()
