#!/usr/bin/env python3
"""The duplicate store's cost per notice, SQLite (one host) against Redis (a pump's nodes),
in one run: prints a table.

Each notice a relay handles costs its share of one claim and one confirm of its batch (the
flow claims a batch's keys at once before working on it, and confirms what it announced at
once).  A process claims `--count` new keys by batches of `--batch` and confirms each
batch, then claims them again (duplicates); then `--processes` processes do the same at
once on one store.  The Redis is one of the
benchmark's own, on a free loopback port, removed at the end.  Target: the Redis store
keeps up with a relay of small files (dd_subscribe mirrors about 1,600 files/s here:
bench/README.rst), i.e. at least 3,000 notices claimed and confirmed per second in one
process.

    python bench/nodupe.py                  # 5,000 keys, 4 processes
    python bench/nodupe.py --count 1000     # quick look

It measures and reports; it never fails on a missed target.
"""
import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path

from core import require
from harness import format_table, start_redis, stop_all

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dd.core.credentials import Url  # noqa: E402 - after the path above
from dd.store import nodupe  # noqa: E402

TARGET = 3000.0     # notices claimed and confirmed per second, one process


def _open(where, tag):
    url = Url.parse(where) if where.startswith("redis://") else None
    return nodupe.opened(url, where, 300, f"bench/{tag}")


def _pairs(where, tag, count, prefix, batch):
    """(notices/s of claim+confirm of new keys, claims/s of duplicates) of one process."""
    store = _open(where, tag)
    keys = [nodupe.key("/t", f"{prefix}/{n}", "sha512:00") for n in range(count)]
    started = time.perf_counter()
    batches = [keys[first:first + batch] for first in range(0, count, batch)]
    for claimed in batches:
        assert all(verdict is True for verdict in store.claim_each(claimed))
        store.confirm(claimed)
    new = count / (time.perf_counter() - started)
    started = time.perf_counter()
    assert not any(verdict is True for claimed in batches for verdict in store.claim_each(claimed))
    again = count / (time.perf_counter() - started)
    store.close()
    return new, again


def _worker(args):
    return _pairs(*args)


def measure(where, tag, count, processes, batch):
    one = _pairs(where, tag, count, "one", batch)
    with multiprocessing.Pool(processes) as pool:
        started = time.perf_counter()
        pool.map(_worker, [(where, tag, count, f"p{n}", batch) for n in range(processes)])
        together = processes * count / (time.perf_counter() - started)
    return one, together


def ping_rate(port, count):
    """PINGs a second, one after the other: the round trips this machine allows one process."""
    import redis
    client = redis.Redis(host="127.0.0.1", port=port)
    started = time.perf_counter()
    for _ in range(count):
        client.ping()
    rate = count / (time.perf_counter() - started)
    client.close()
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5000, help="keys per process")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50, help="keys confirmed at once")
    args = parser.parse_args()
    require(["redis-server"], "install it: apt install redis-server")
    base = Path(tempfile.mkdtemp(prefix="dd-bench-nodupe-"))
    try:
        _, port = start_redis(base / "redis")
        rows = []
        for name, where in (("sqlite", str(base / "nodupe.sqlite")), ("redis", f"redis://127.0.0.1:{port}/0")):
            (new, again), together = measure(where, name, args.count, args.processes, args.batch)
            verdict = "" if name == "sqlite" else ("met" if new >= TARGET else "missed")
            rows.append([name, f"{new:,.0f}/s", f"{again:,.0f}/s", f"{together:,.0f}/s",
                         f"{TARGET:,.0f}/s {verdict}" if verdict else "-"])
        print(format_table(["store", f"claim+confirm (by {args.batch}), 1 process",
                            f"duplicate claim (by {args.batch})",
                            f"claim+confirm, {args.processes} processes (total)", "target"], rows))
        print(f"\nbaseline (same run): a bare Redis PING, 1 process: {ping_rate(port, args.count):,.0f}/s; "
              "a batch's claims are one round trip, as a PING is")
    finally:
        stop_all()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
