"""rate_max and memory bounds.

The rate test asserts a lower bound on the time taken only: the limiter must
make a copy take at least (size / rate_max) less 10 %, whatever the machine's
speed, so it cannot fail on a slow or busy machine.  That the limit is also
reached (not undershot) on 200 MB is measured by bench/parts.py."""
import io
import subprocess
import sys
import threading
import time

from dd.core.options import parse_size
from dd.transfer.copy import copy

MB = 1_000_000


class Sink:
    def write(self, data):
        return len(data)


def test_rate_max_is_never_exceeded_by_more_than_10_percent():
    rate = parse_size("10M")
    size = 2 * rate
    started = time.monotonic()
    result = copy(io.BytesIO(bytes(size)), Sink(), length=size, rate_max=rate)
    assert result.nbytes == size
    assert time.monotonic() - started >= 0.9 * size / rate


def test_rate_max_is_shared_by_the_copies_of_a_process():
    rate = parse_size("10M")
    size = rate // 2
    threads = [threading.Thread(target=copy, args=(io.BytesIO(bytes(size)), Sink()),
                                kwargs=dict(length=size, rate_max=rate)) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.monotonic() - started >= 0.9 * 4 * size / rate


def test_posting_a_4_gib_file_in_parts_holds_a_few_blocks_at_most(pump):
    big = pump.src / "big"
    with open(big, "wb") as f:  # sparse: reads cost no disk
        f.truncate(4 << 30)
    with open(pump.base / "post.err", "wb") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "dd.cli.main", "post", f"--post_broker={pump.broker_url}",
             f"--post_exchange={pump.exchange}", f"--post_base_url={pump.base_url}",
             f"--post_base_dir={pump.src}", "--blocksize=64M", "--checksum=xxh128", str(big)],
            env=pump.env, stdout=subprocess.DEVNULL, stderr=err_file)
    # VmHWM, read while it runs: the peak of its own image (ru_maxrss would also count the
    # test process's pages the child shared between fork and exec).
    peak = 0
    while process.poll() is None:
        peak = max(peak, _vm_hwm(process.pid))
        time.sleep(0.05)
    err = (pump.base / "post.err").read_text()
    assert process.returncode == 0, err
    assert "64 announced" in err
    assert 0 < peak < 2 * (64 << 20), f"peak RSS {peak} bytes"  # about 47 MiB measured


def _vm_hwm(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0
