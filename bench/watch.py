#!/usr/bin/env python3
"""dd_watch against `sr3 watch` on this machine, in one run: prints a table.

Latency: files of 1 KiB are written one by one, 50 ms apart, into a watched
directory; each file's latency is from its close to its notice reaching the
broker (a private queue bound to the exchange).  Throughput: a burst of files,
written beforehand beside the watched tree, is dropped into it at once (one
rename each, as a writer finishing its files does); files per second is from
the first rename to the last notice, and every file must be announced.

Run from the repository root (dd installed; RabbitMQ on 127.0.0.1:5672 with
guest/guest and rabbitmqctl; metpx-sr3):

    python bench/watch.py                          # 200 files, a burst of 10,000
    python bench/watch.py --burst 2000 --skip-sr3  # quick look at dd alone
    python bench/watch.py --sr3-sleep 0.1          # sr3 gathering events every 0.1 s, not 5 s

It measures and reports; it never fails on a missed target.  See bench/README.rst.
"""
import argparse
import atexit
import getpass
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from harness import BROKER_HOST, amqp_connect, format_table, run_checked, spawn, stop_all, stop_group

SIZE = 1024
PACE = 0.05                 # seconds between the files of the latency phase
WAIT = 120.0                # seconds a phase waits for its last notice


class Arrivals(threading.Thread):
    """When each file's notice reached the exchange: {rel_path: monotonic time}."""

    def __init__(self, vhost, exchange):
        super().__init__(daemon=True)
        self.times = {}
        self._done = threading.Event()
        self._connection = amqp_connect(vhost)
        channel = self._connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        channel.queue_bind(queue, exchange, "#")
        channel.basic_consume(queue, callback=self._on_message, no_ack=True)
        self.start()

    def _on_message(self, message):
        body = json.loads(message.body)
        # dd's v02 and Sarracenia's v03 both name the path; only the first sighting counts.
        rel_path = body.get("rel_path") or body.get("relPath")
        self.times.setdefault(rel_path.lstrip("/"), time.monotonic())

    def run(self):
        while not self._done.is_set():
            try:
                self._connection.drain_events(timeout=0.1)
            except TimeoutError:
                pass

    def wait(self, names, deadline):
        while time.monotonic() < deadline and not all(n in self.times for n in names):
            time.sleep(0.02)

    def close(self):
        self._done.set()
        self.join(2)
        self._connection.close()


class Tool:
    def __init__(self, name, work, vhost):
        self.name = name
        self.dir = work / name
        self.src = self.dir / "src"
        self.src.mkdir(parents=True)
        self.log = self.dir / "watch.log"
        self.vhost = vhost
        self.exchange = f"x{name}"
        self.process = None


class DdWatch(Tool):
    def start(self, args):
        env = dict(os.environ, **{f"DD_{k.upper()}_DIR": str(self.dir / k) for k in ("config", "state", "log")})
        (self.dir / "config" / "watch").mkdir(parents=True)
        (self.dir / "config" / "watch" / "bench.conf").write_text(
            f"post_broker amqp://guest:guest@{BROKER_HOST}/{self.vhost}\npost_exchange {self.exchange}\n"
            f"post_base_url http://127.0.0.1/\npost_base_dir {self.src}\npath {self.src}\n")
        self.process = spawn(["dd_watch", "foreground", "bench"], env=env, cwd=self.dir, log=self.log)
        return "change(s) since the last run"


class Sr3Watch(Tool):
    def start(self, args):
        home = self.dir / "home"
        config = home / ".config" / "sr3"
        (config / "watch").mkdir(parents=True)
        (config / "credentials.conf").write_text(f"amqp://guest:guest@{BROKER_HOST}/{self.vhost}\n")
        (config / "watch" / "bench.conf").write_text(
            f"post_broker amqp://guest@{BROKER_HOST}/{self.vhost}\npost_exchange {self.exchange}\n"
            f"post_baseUrl http://127.0.0.1/\npost_baseDir {self.src}\npath {self.src}\n"
            + (f"sleep {args.sr3_sleep}\n" if args.sr3_sleep else ""))
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env.update(HOME=str(home), USER=getpass.getuser())
        self.process = spawn(["sr3", "foreground", "watch/bench"], env=env, cwd=self.dir, log=self.log)
        return "now active on"


def write(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return time.monotonic()


def cpu_seconds(process):
    """User and system CPU time of `process` and its children so far."""
    total = 0.0
    try:
        tree = psutil.Process(process.pid)
        for member in [tree] + tree.children(recursive=True):
            times = member.cpu_times()
            total += times.user + times.system
    except psutil.Error:
        pass
    return total


def measure(tool, args):
    """(latencies in seconds, burst files announced, burst seconds, burst CPU seconds)."""
    arrivals = Arrivals(tool.vhost, tool.exchange)
    try:
        ready = tool.start(args)
        deadline = time.monotonic() + 60
        while ready not in tool.log.read_text(errors="replace"):
            if time.monotonic() > deadline or tool.process.poll() is not None:
                raise SystemExit(f"bench: {tool.name} watch did not start; see {tool.log}")
            time.sleep(0.05)
        time.sleep(0.5)
        data = os.urandom(SIZE)
        (tool.src / "latency").mkdir()
        closed = {}
        for i in range(args.files):
            name = f"latency/{i:04d}.dat"
            closed[name] = write(tool.src / name, data)
            time.sleep(PACE)
        arrivals.wait(closed, time.monotonic() + WAIT)
        latencies = [arrivals.times[n] - t for n, t in closed.items() if n in arrivals.times]

        staging = tool.dir / "staging"
        staging.mkdir()
        (tool.src / "burst").mkdir()
        names = [f"burst/{i:05d}.dat" for i in range(args.burst)]
        for name in names:
            write(staging / os.path.basename(name), data)
        os.sync()
        time.sleep(1)
        cpu = cpu_seconds(tool.process)
        started = time.monotonic()
        for name in names:
            os.rename(staging / os.path.basename(name), tool.src / name)
        arrivals.wait(names, time.monotonic() + WAIT)
        announced = [arrivals.times[n] for n in names if n in arrivals.times]
        seconds = (max(announced) - started) if announced else None
        return latencies, len(announced), seconds, cpu_seconds(tool.process) - cpu
    finally:
        arrivals.close()
        if tool.process:
            stop_group(tool.process)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=200, help="files of the latency phase")
    parser.add_argument("--burst", type=int, default=10000, help="files of the throughput phase")
    parser.add_argument("--skip-sr3", action="store_true")
    parser.add_argument("--sr3-sleep", type=float, help="sr3's sleep (seconds between event gatherings)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="ddbench-watch-"))
    vhost = f"ddbench-watch-{os.getpid()}"
    run_checked(["rabbitmqctl", "-q", "add_vhost", vhost], timeout=60, what="rabbitmqctl add_vhost")

    def cleanup():
        stop_all()
        run_checked(["rabbitmqctl", "-q", "delete_vhost", vhost], timeout=60, what="rabbitmqctl delete_vhost")
        if args.keep:
            print(f"bench: work directory kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    run_checked(["rabbitmqctl", "-q", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
         timeout=60, what="rabbitmqctl set_permissions")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    rows, rates = [], {}
    for tool in [DdWatch("dd", work, vhost)] + ([] if args.skip_sr3 else [Sr3Watch("sr3", work, vhost)]):
        print(f"bench: {tool.name}", file=sys.stderr)
        latencies, announced, seconds, cpu = measure(tool, args)
        ms = sorted(x * 1000 for x in latencies)
        p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))] if ms else None
        rates[tool.name] = announced / seconds if seconds else None
        rows.append([f"{tool.name} watch", f"{len(ms)}/{args.files}",
                     f"{statistics.median(ms):.1f}" if ms else "-", f"{p99:.1f}" if p99 is not None else "-",
                     f"{announced}/{args.burst}", f"{seconds:.2f}" if seconds else "-",
                     f"{rates[tool.name]:.0f}" if rates[tool.name] else "-",
                     f"{cpu * 1000 / max(announced, 1):.2f}"])
    print(f"\ndd_watch vs sr3 watch: {args.files} files 50 ms apart, then a burst of {args.burst} "
          f"(1 KiB, sha512); load average at start {load}")
    print(format_table(["watcher", "noticed", "median ms", "p99 ms", "burst noticed", "burst s", "files/s",
                        "CPU ms/file"],
                       rows))
    if rates.get("dd") and rates.get("sr3"):
        print(f"\ndd/sr3 throughput: {rates['dd'] / rates['sr3']:.1f}x (target at least 3x); "
              f"dd median latency target: under 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
