"""The one copy loop every transfer goes through: checksum, rate limit and
keep-alive ticks happen here, while the bytes pass, never in a second pass."""
import collections
import concurrent.futures
import dataclasses
import threading
import time
from typing import Optional

from dd.core.errors import TransferError

CHUNK_SIZE = 1 << 20
TICK_INTERVAL = 0.5
RATE_SLACK = 0.1
#: Chunks at least this big are hashed on a helper thread while being written.
OVERLAP_MIN = 256 << 10


#: Big chunks in flight per copy: read ahead while earlier ones are hashed and written.
RING = 4


class _Lanes:
    """One thread per hasher and one for the writes: each lane does its chunks in order,
    all lanes at once, while the copy reads ahead into a ring of buffers."""

    def __init__(self, hashers, dst):
        self.work = [h.update for h in hashers] + [lambda data: _write_all(dst, data)]
        self.lanes = [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dd-copy")
                      for _ in self.work]

    def submit(self, data):
        return [lane.submit(work, data) for lane, work in zip(self.lanes, self.work)]

    def close(self):
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

    def __init__(self):
        self._lock = threading.Lock()
        self._booked_until = 0.0

    def wait_for(self, nbytes, rate):
        """Seconds to wait so that these bytes keep the process at `rate` bytes/s."""
        with self._lock:
            now = time.monotonic()
            self._booked_until = max(self._booked_until, now - RATE_SLACK) + nbytes / rate
            return self._booked_until - now


_limiter = _Limiter()


def copy(src, dst, *, length=None, hasher=None, also_hash=(), rate_max=0, tick=None,
         chunk_size=CHUNK_SIZE, name="source"):
    """Copy `src` (readable) to `dst` (a writable binary file, buffered or not).
    `hasher` gives the result's checksum; `also_hash` are more hashers fed the
    same bytes side by side (the caller reads their digests).
    With `length`, a source that ends early or has more is a TransferError
    naming `name`.  `tick()` is called about every 0.5 s, also
    while sleeping for `rate_max`, so a caller can keep a connection alive."""
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
    in_flight = collections.deque()     # per big chunk: its futures, oldest first
    lanes = None

    def ticking():
        nonlocal last_tick
        if tick is not None and time.monotonic() - last_tick >= TICK_INTERVAL:
            tick()
            last_tick = time.monotonic()

    def settle(keep):
        while len(in_flight) > keep:
            for each in in_flight.popleft():
                each.result()

    try:
        while length is None or nbytes < length:
            want = chunk_size if length is None else min(chunk_size, length - nbytes)
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


def _write_all(dst, data):
    # Unbuffered files may write part of what they are given; None means all (paramiko).
    while data:
        written = dst.write(data)
        if written is None:
            return
        data = data[written:]


def _sleep(seconds, ticking):
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, TICK_INTERVAL))
        ticking()
