#!/usr/bin/env python3
"""dd against sr3 (MetPX Sarracenia 3) on this machine, in one run: prints a table.

Each tool posts and mirrors small files and one big file through its own
exchange on a private RabbitMQ vhost, from a private nginx; the machine's own
limits (RabbitMQ publish rate, curl, the checksum) are measured in the same run.

Run from the repository root (dd installed, e.g. `pip install -e .`; RabbitMQ
on 127.0.0.1:5672 with guest/guest and rabbitmqctl; nginx-light; metpx-sr3):

    python bench/core.py                                  # 2,000 x 1 KiB and 1 GiB, ~1.5 min
    python bench/core.py --small-count 200 --big-size 64M # quick look
    python bench/core.py --skip-sr3                       # dd only
    python bench/core.py --keep                           # keep trees, configs and logs

It measures and reports; it never fails on a missed target.  See bench/README.rst.
"""
import argparse
import dataclasses
import getpass
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import time

import amqp
import psutil

import harness
from harness import (BROKER_HOST, Daemon, Mirror, NGINX, NoticeWatch,
                     PhaseError, SMALL_SIZE, byte_size, cell, checksum_speed, children_cpu,
                     create_cost, format_table, last_line, make_big_file, make_small_tree,
                     parse_size, positive, print_notes, publish_rate, rate_text, run, run_checked,
                     size_text, spawn, start_nginx, stop_group, timed_run, wait_mirror, warm)

#: The checksum of a file alone, in a process of its own (hashlib.file_digest: Python 3.11).
SUM_FILE = "import hashlib, sys; hashlib.file_digest(open(sys.argv[1], 'rb'), sys.argv[2])"
IDLE_SETTLE = 1.0           # seconds a subscriber sits connected before it counts as idle


# -- the tools ------------------------------------------------------------------------

_cleared = itertools.count()


class Tool:
    """How one tool is configured, posts and subscribes, in its own part of the work directory."""

    name = ""

    def __init__(self, work, vhost, base_url, src, checksum):
        self.dir = work / self.name
        self.dst = self.dir / "dst"
        self.logs = self.dir / "logs"
        self.logs.mkdir(parents=True)
        self.vhost, self.base_url, self.src, self.checksum = vhost, base_url, src, checksum
        self.exchange = f"x{self.name}"
        self.queue = f"q_guest.bench.{self.name}"
        self.env = self.configure()

    def configure(self):
        """Write the tool's configuration; return the environment its commands run in."""
        raise NotImplementedError

    def post_command(self, path):
        raise NotImplementedError

    def subscribe_command(self):
        raise NotImplementedError

    def post(self, path, log):
        return spawn(self.post_command(path), env=self.env, cwd=self.dir, log=log)

    def subscriber(self, phase):
        return Daemon(self.subscribe_command(), env=self.env, cwd=self.dir,
                      log=self.logs / f"subscribe-{phase}.log")

    def clear_destination(self):
        # Moved aside, not deleted: ext4 makes every file created within minutes of a mass
        # deletion search past the freed inodes (recently_deleted() in its allocator), which
        # would charge the next phase, of either tool, with the last one's clean-up.
        if self.dst.exists():
            self.dst.rename(self.dst.with_name(f"{self.dst.name}.done{next(_cleared)}"))

    def ready(self, broker, daemon):
        """Whether the subscriber is connected and waiting for notices."""
        raise NotImplementedError

    def queued(self, bench):
        """How many notices wait in the tool's queue."""
        return bench.broker.depth(self.queue)[0]

    def purge(self, bench):
        bench.broker.purge(self.queue)

    def notice_watch(self, bench):
        """What notes when notices reach the tool's exchange (.first, .close())."""
        return NoticeWatch(bench.vhost, self.exchange)


class DdTool(Tool):
    name = "dd"

    def configure(self):
        env = harness.dd_environment(self.dir)
        config = self.dir / "config" / "subscribe"
        config.mkdir(parents=True)
        (config / "bench.conf").write_text(
            f"broker {self.broker_url}\nexchange {self.exchange}\nqueue {self.queue}\n"
            f"expire 1h\ndirectory {self.dst}\n")
        return env

    @property
    def broker_url(self):
        return f"amqp://guest:guest@{BROKER_HOST}/{self.vhost}"

    def declare(self):
        run_checked(["dd_subscribe", "declare", "bench"], env=self.env, cwd=self.dir, timeout=30,
             what="dd_subscribe declare")

    def post_command(self, path):
        return ["dd_post", "--post_broker", self.broker_url, "--post_exchange", self.exchange,
                "--post_base_url", self.base_url, "--post_base_dir", str(self.src),
                "--checksum", self.checksum, str(path)]

    def subscribe_command(self):
        return ["dd_subscribe", "foreground", "bench"]

    def ready(self, broker, daemon):
        return broker.depth(self.queue)[1] > 0


class Sr3Tool(Tool):
    name = "sr3"

    def configure(self):
        home = self.dir / "home"
        config = home / ".config" / "sr3"
        for component in ("post", "subscribe"):
            (config / component).mkdir(parents=True)
        broker = f"amqp://guest@{BROKER_HOST}/{self.vhost}"
        (config / "credentials.conf").write_text(f"amqp://guest:guest@{BROKER_HOST}/{self.vhost}\n")
        (config / "post" / "bench.conf").write_text(
            f"post_broker {broker}\npost_exchange {self.exchange}\npost_baseUrl {self.base_url}\n"
            f"post_baseDir {self.src}\nidentity {self.checksum}\n")
        # mirror on: recreate the tree as dd does (sr3's subscribe default flattens).
        (config / "subscribe" / "bench.conf").write_text(
            f"broker {broker}\nexchange {self.exchange}\nqueueName {self.queue}\nexpire 1h\n"
            f"mirror on\ndirectory {self.dst}\n")
        # sr3 finds its configuration through HOME, or XDG_* when set.
        env = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
        env.update(HOME=str(home), USER=getpass.getuser())
        return env

    def declare(self):
        for config in ("post/bench", "subscribe/bench"):   # the exchange first, then the queue
            run_checked(["sr3", "declare", config], env=self.env, cwd=self.dir, timeout=60,
                 what=f"sr3 declare {config}")

    def post_command(self, path):
        return ["sr3_post", "-c", "bench", str(path)]

    def subscribe_command(self):
        return ["sr3", "foreground", "subscribe/bench"]

    def ready(self, broker, daemon):
        # sr3 polls with basic_get, so the queue shows no consumer: its log tells instead.
        return " binding " in daemon.log.read_text(errors="replace")


# -- measurements -----------------------------------------------------------------------

@dataclasses.dataclass
class Row:
    phase: str
    tool: str
    seconds: float = None
    files: int = 0              # files per second shown when set
    nbytes: int = 0             # MB/s shown when set
    cpu: float = None
    rss: int = None
    status: str = ""            # "timeout" or "failed" replaces the time


class Bench(harness.Bench):
    def __init__(self, args, work):
        super().__init__(args, work)
        self.rows = []
        self.limits = {}        # name -> (value, unit)
        self.curl_big = {}      # tool name -> curl's MB/s on the big file just before and after its mirror
        self.sum_big = {}       # tool name -> MB/s of summing the big file alone, just before its post
        self.publish_rate = self.curl_small = None      # py-amqp's msg/s, curl's small files/s
        # Other work on the machine skews every number: the report shows how busy it was.
        self.load = " ".join(f"{x:.2f}" for x in os.getloadavg())

    def setup(self):
        args = self.args
        self.make_vhost("ddbench")

        self.src = self.work / "src"
        self.small = {name: make_small_tree(self.src / name, args.small_count)
                      for name in ("small_a", "small_b")}
        self.big_path = self.src / "big" / "big.bin"
        if args.big_size:
            make_big_file(self.big_path, args.big_size)
        os.sync()   # later phases do not pay for writing the sources back
        self.start_tools([DdTool] + ([] if args.skip_sr3 else [Sr3Tool]))

    def start_tools(self, tool_classes, **nginx_options):
        """nginx serving self.src, and the tools configured to fetch from it."""
        nginx_process, self.base_url = start_nginx(self.work / "nginx", self.src, **nginx_options)
        self.on_exit(stop_group, nginx_process)
        self.tools = [tool(self.work, self.vhost, self.base_url, self.src, self.args.checksum)
                      for tool in tool_classes]
        for tool in self.tools:
            tool.declare()

    # machine limits

    def measure_limits(self):
        args = self.args
        count = max(5 * args.small_count, 1000)
        rate = self.publish_rate = publish_rate(self.vhost, count)
        self.limits["RabbitMQ publish, confirmed (1 py-amqp process)"] = (f"{rate:,.0f}", "msg/s")

        curl_dir = self.work / "curl"
        curl_config = self.work / "curl.conf"
        curl_config.write_text("".join(f'url = "{self.base_url}{rel}"\noutput = "{curl_dir / rel}"\n'
                                       for rel in self.small["small_a"]))
        seconds, cpu = timed_run(["curl", "-sS", "--fail", "--create-dirs", "-K", str(curl_config)],
                                 timeout=args.timeout)
        self.curl_small = args.small_count / seconds
        self.limits[f"curl, {args.small_count} x 1 KiB, keep-alive (1 process)"] = (
            rate_text(args.small_count, seconds), f"files/s  ({cpu:.2f} CPU s)")
        # curl's copies stay until the end, for the reason Tool.clear_destination gives.
        # curl's big download is measured in phase 4, around each tool's (curl_big_for).

        self.limits["creating a 1 KiB file in the work directory (1 process)"] = (
            f"{create_cost(self.work) * 1e6:,.0f}", "µs")

        hash_speed = checksum_speed(args.checksum)
        if hash_speed:
            self.limits[f"hashlib {args.checksum}, a hot 1 MiB block in memory"] = (f"{hash_speed:,.0f}", "MB/s")

    # the phases: each tool in turn, so drift over the run affects both alike

    def run_phases(self):
        phases = [self.post_small, self.mirror_full_queue, self.idle_start]
        if self.args.big_size:
            phases.append(self.big_file)
        for phase in phases:
            for tool in self.tools:
                # No phase pays for flushing another's writes, or for their files.
                for each in self.tools:
                    each.clear_destination()
                os.sync()
                try:
                    phase(tool)
                except (PhaseError, OSError, amqp.exceptions.AMQPError) as error:
                    self.notes.append(f"{tool.name}, {phase.__name__}: {error}")
                    self.rows.append(Row(phase.__doc__.split(":")[0], tool.name, status="failed"))

    def post_small(self, tool):
        """1 post small: dd_post or sr3_post of a tree, from launch to exit"""
        tree = self.src / "small_a"
        log = tool.logs / "post-small.log"
        warm(tree)
        cpu_before = children_cpu()
        started = time.monotonic()
        process = tool.post(tree, log)
        try:
            process.wait(self.args.timeout)
        except subprocess.TimeoutExpired:
            stop_group(process)
            self.rows.append(Row("1 post small", tool.name, status="timeout"))
            return
        seconds, cpu = time.monotonic() - started, children_cpu() - cpu_before
        if process.returncode:
            raise PhaseError(f"post exited with status {process.returncode}: {last_line(log)}")
        count = self.args.small_count
        self.rows.append(Row("1 post small", tool.name, seconds, count, count * SMALL_SIZE, cpu))
        # The queue must hold the notices before phase 2 starts its subscriber.
        deadline = time.monotonic() + 10
        while tool.queued(self) < count:
            if time.monotonic() > deadline:
                raise PhaseError(f"queue {tool.queue} holds {tool.queued(self)} of "
                                 f"{count} notices after the post")
            time.sleep(0.05)

    def mirror_full_queue(self, tool):
        """2 mirror, full queue: one subscriber started on the queue phase 1 filled"""
        files = self.small["small_a"]
        mirror = Mirror(tool.dst, files)
        started = time.monotonic()
        daemon = tool.subscriber("full-queue")
        try:
            arrival = wait_mirror(mirror, started, started + self.args.timeout, daemon)
        finally:
            cpu, rss = daemon.stop()
        self._note_incomplete(tool, "mirror from a full queue", mirror)
        self.rows.append(_span("2 launch -> first file", tool, started, arrival.first))
        self.rows.append(_span("2 launch -> all files", tool, started, arrival.all, files, cpu, rss))

    def idle_start(self, tool):
        """3 idle start: a subscriber idle on an empty queue, then a post of a new tree"""
        files = self.small["small_b"]
        arrival = self._posted_to_idle(tool, "idle", self.src / "small_b", files)
        self.rows.append(_span("3 post start -> first file", tool, arrival.started, arrival.first))
        self.rows.append(_span("3 first notice -> first file", tool, arrival.first_notice, arrival.first))
        self.rows.append(_span("3 post start -> all files", tool, arrival.started, arrival.all, files,
                               arrival.cpu, arrival.rss))

    def big_file(self, tool):
        """4 big file: an idle subscriber, then a post of the big file"""
        self.curl_big_for(tool, "warm-up")
        self.curl_big_for(tool, "before")
        self.sum_big_for(tool)
        files = {str(self.big_path.relative_to(self.src)): self.args.big_size}
        arrival = self._posted_to_idle(tool, "big", self.big_path, files)
        self.rows.append(_span("4 post big", tool, arrival.started, arrival.post_end, files,
                               arrival.post_cpu))
        self.rows.append(_span("4 first notice -> mirrored", tool, arrival.first_notice, arrival.all,
                               files, arrival.cpu, arrival.rss))
        self.curl_big_for(tool, "after")

    def curl_big_for(self, tool, when):
        """curl fetches the big file into `tool`'s directory and keeps it, as the tool keeps its
        copy: "before" and "after" the tool's mirror, whose baseline is their mean, and first a
        "warm-up" that is no baseline.  This VM gives the host back memory freed a few seconds
        ago and reclaims page cache left untouched for 30 s: writing 1 GiB costs 1.1-1.5 s of
        system time into memory just freed, 2.6-3.8 s into memory given back.  While phases
        1-3 run, about 1 GiB is reclaimed, and the first download of phase 4 writes into it
        (curl: 830-940 MB/s) while all the others, the tool's included, find memory given back
        (curl: 280-440 MB/s).  The warm-up takes that memory, so that curl and the tool are
        measured in the same state."""
        seconds, cpu = curl_fetch(f"{self.base_url}big/big.bin", self.big_path, tool.dir / f"curl-big-{when}.bin",
                                  timeout=self.args.timeout)
        speed = self.args.big_size / seconds / 1e6
        if when == "warm-up":
            label = f"first of {tool.name}'s phase 4 (warm-up, no baseline)"
        else:
            label = f"just {when} {tool.name}'s mirror"
            self.curl_big.setdefault(tool.name, []).append(speed)
        self.limits[f"curl, 1 x {size_text(self.args.big_size)}, {label}"] = (
            f"{speed:,.0f}", f"MB/s  ({cpu:.2f} CPU s)")

    def sum_big_for(self, tool):
        """The checksum alone: hashlib summing the big file in a new Python process, launch to
        exit, from memory as warm as the post's: what posting costs when announcing is free.
        (The in-memory hashlib limit hashes one hot 1 MiB block: no file, no process.)"""
        if self.args.checksum == "none":
            return
        seconds, cpu = sum_alone(self.big_path, self.args.checksum, timeout=self.args.timeout)
        self.sum_big[tool.name] = self.args.big_size / seconds / 1e6
        self.limits[f"{self.args.checksum} of the {size_text(self.args.big_size)} file alone, "
                    f"just before {tool.name}'s post"] = (f"{self.sum_big[tool.name]:,.0f}",
                                                          f"MB/s  ({cpu:.2f} CPU s)")

    def _posted_to_idle(self, tool, phase, path, files):
        """Start a subscriber, let it idle, post `path`; time until `files` are all mirrored."""
        tool.purge(self)     # leftovers of a phase that timed out
        mirror = Mirror(tool.dst, files)
        daemon = tool.subscriber(phase)
        watch = None
        try:
            deadline = time.monotonic() + self.args.timeout
            while not tool.ready(self.broker, daemon):
                daemon.check()
                if time.monotonic() > deadline:
                    raise PhaseError("the subscriber was not ready within --timeout")
                time.sleep(0.05)
            idle_until = time.monotonic() + IDLE_SETTLE
            while time.monotonic() < idle_until:
                daemon.check()
                time.sleep(0.05)
            watch = tool.notice_watch(self)
            log = tool.logs / f"post-{phase}.log"
            warm(path)
            started = time.monotonic()
            poster = tool.post(path, log)
            try:
                arrival = wait_mirror(mirror, started, started + self.args.timeout, daemon, poster, log)
            finally:
                stop_group(poster)
        finally:
            cpu, rss = daemon.stop()
            if watch:
                watch.close()
        arrival.cpu, arrival.rss, arrival.first_notice = cpu, rss, watch.first
        self._note_incomplete(tool, phase, mirror)
        return arrival

    def _note_incomplete(self, tool, what, mirror):
        if mirror.done < mirror.total:
            self.notes.append(f"{tool.name}, {what}: {mirror.done} of {mirror.total} files within "
                              f"--timeout {self.args.timeout:g} s")


def curl_fetch(url, source, destination, *, timeout):
    """(wall, CPU seconds) of curl fetching `url`, nginx's copy of `source`, warmed first."""
    warm(source)
    return timed_run(["curl", "-sS", "--fail", "-o", str(destination), url], timeout=timeout)


def sum_alone(path, method, *, timeout):
    """(wall, CPU seconds) of summing `path`, warmed first, in a Python process of its own."""
    warm(path)
    return timed_run([sys.executable, "-c", SUM_FILE, str(path), method], timeout=timeout)


def _span(phase, tool, start, end, files=None, cpu=None, rss=None):
    """A row for the time from `start` to `end`; `files` ({rel_path: size}) give its rates."""
    if start is None or end is None:
        return Row(phase, tool.name, cpu=cpu, rss=rss, status="timeout")
    files = files or {}
    small = files and all(size == SMALL_SIZE for size in files.values())
    return Row(phase, tool.name, end - start, len(files) if small else 0, sum(files.values()), cpu, rss)


# -- the report ------------------------------------------------------------------------------


def results_table(rows):
    phases = list(dict.fromkeys(r.phase for r in rows))
    rows = sorted(rows, key=lambda r: (phases.index(r.phase), r.tool != "dd"))
    by_key = {(r.phase, r.tool): r for r in rows}
    headers = ["phase", "tool", "time s", "files/s", "MB/s", "CPU s", "RSS MB", "time dd/sr3",
               "CPU dd/sr3"]
    lines = []
    for r in rows:
        time_cell = r.status or f"{r.seconds:.3f}"
        ok = not r.status and r.seconds
        files = rate_text(r.files, r.seconds) if ok and r.files else "-"
        mbs = f"{r.nbytes / r.seconds / 1e6:,.1f}" if ok and r.nbytes else "-"
        ratio = cpu_ratio = ""
        other = by_key.get((r.phase, "sr3"))
        if r.tool == "dd" and other:
            if ok and not other.status and other.seconds:
                ratio = f"{r.seconds / other.seconds:.2f}"
            if r.cpu and other.cpu:
                cpu_ratio = f"{r.cpu / other.cpu:.2f}"
        lines.append([r.phase if r.tool == "dd" or (r.phase, "dd") not in by_key else "", r.tool,
                      time_cell, files, mbs, cell(r.cpu, ".2f"),
                      cell(r.rss / 1e6 if r.rss else None, ".1f"), ratio, cpu_ratio])
    if not any(r.tool == "sr3" for r in rows):
        headers, lines = headers[:-2], [line[:-2] for line in lines]
    return format_table(headers, lines)


LEGEND = """\
legend
  time s       wall-clock seconds of the span the phase names; 'timeout' past --timeout, 'failed' see notes
  files/s      small files per second over that span;  MB/s: 10^6 bytes per second over it
  CPU s        user+system CPU seconds of the tool's process(es) in the phase, startup included
               (phases 2-4: the subscriber, sampled until it is stopped; 4 post big: the poster)
  RSS MB       peak resident memory (VmHWM) of the subscriber's largest process, 10^6 bytes
  dd/sr3       dd's value / sr3's for the same work: below 1, dd is faster or uses less CPU
phases (each tool in turn, each subscriber a fresh process, default log levels, mirroring the tree)
  1  post a tree of small files; the notices stay queued for phase 2
  2  start one subscriber on that full queue; launch to first and to all files complete on disk
  3  a subscriber idle on an empty queue; post another tree; 'first notice' is when the first
     notice reached the exchange (seen by a bench consumer), so that row is the subscriber's reaction
  4  the same with the big file: post time (launch to exit), and mirror time from its notice"""


def targets_report(rows, bench):
    """dd's results against its targets: reported, never asserted."""
    def dd(phase):
        row = next((r for r in rows if r.phase == phase and r.tool == "dd"), None)
        return row if row and not row.status and row.seconds else None

    lines = []

    def target(name, wanted, row, value, unit, met):
        digits = 2 if unit == "x" else 1 if value and value < 100 else 0
        shown = "not measured" if row is None else f"{value:,.{digits}f} {unit}"
        verdict = "" if row is None else ("met" if met else "MISSED")
        lines.append([name, wanted, shown, verdict])

    post = dd("1 post small")
    target("dd_post small files", ">= 3,000 files/s", post,
           post and post.files / post.seconds, "files/s", post and post.files / post.seconds >= 3000)
    publish = bench.publish_rate
    if publish:
        target("  against py-amqp's confirmed publish", f">= 0.6 x {publish:,.0f} msg/s", post,
               post and post.files / post.seconds / publish, "x", post and post.files / post.seconds >= 0.6 * publish)
    full = dd("2 launch -> all files")
    target("one dd_subscribe, full queue", ">= 1,000 files/s", full,
           full and full.files / full.seconds, "files/s", full and full.files / full.seconds >= 1000)
    curl = bench.curl_small
    if curl:
        target("  against curl over keep-alive", f">= 0.6 x {curl:,.0f} files/s", full,
               full and full.files / full.seconds / curl, "x", full and full.files / full.seconds >= 0.6 * curl)
    react = dd("3 first notice -> first file")
    target("idle start: first file", "<= 100 ms", react, react and react.seconds * 1000, "ms",
           react and react.seconds <= 0.1)
    burst = dd("3 post start -> all files")
    limit = 3 * bench.args.small_count / 2000
    target(f"idle start: all {bench.args.small_count} files", f"<= {limit:g} s (3 s per 2,000)", burst,
           burst and burst.seconds, "s", burst and burst.seconds <= limit)
    if bench.args.big_size:
        big = dd("4 post big")
        speed = big and big.nbytes / big.seconds / 1e6
        alone = bench.sum_big.get("dd")
        if alone:
            target("post big file", f">= 0.9 x {bench.args.checksum} alone = {0.9 * alone:,.0f} MB/s",
                   big, speed, "MB/s", big and speed >= 0.9 * alone)
        mirror = dd("4 first notice -> mirrored")
        curl = statistics.fmean(bench.curl_big["dd"]) if bench.curl_big.get("dd") else None
        limit = min(v for v in (curl, alone) if v)
        speed = mirror and mirror.nbytes / mirror.seconds / 1e6
        target("mirror big file",
               f">= 0.85 x min(curl around, {bench.args.checksum} alone) = {0.85 * limit:,.0f} MB/s",
               mirror, speed, "MB/s", mirror and speed >= 0.85 * limit)
    peaks = [r.rss for r in rows if r.tool == "dd" and r.rss]
    peak = max(peaks, default=None)
    target("dd_subscribe peak RSS (all phases)", "< 80 MB", peak, peak and peak / 1e6, "MB",
           peak and peak < 80e6)
    return format_table(["target", "wanted", "dd", ""], lines)


def report(bench):
    args = bench.args
    big = size_text(args.big_size) if args.big_size else "(none)"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\ndd vs sr3: {args.small_count} x 1 KiB, 1 x {big}, checksum {args.checksum}, "
          f"sr3 {'skipped' if args.skip_sr3 else _sr3_version()}\n"
          f"machine: {os.cpu_count()} CPUs, {psutil.virtual_memory().total / (1 << 30):.0f} GiB, "
          f"load average at start {bench.load}, at end {load}\n")
    print(results_table(bench.rows))
    print()
    print(format_table(["machine limit (same run)", "value", "unit"],
                       [[name, value, unit] for name, (value, unit) in bench.limits.items()]))
    print()
    print(targets_report(bench.rows, bench))
    print()
    print(LEGEND)
    print_notes(bench.notes)
    if bench.notes and not args.keep:
        print("  (run with --keep to inspect the logs)")


def _sr3_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("metpx-sr3")
    except PackageNotFoundError:
        return "?"


# -- main ------------------------------------------------------------------------------------


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=positive, default=2000, help="small files per tree (2000)")
    parser.add_argument("--big-size", type=byte_size, default=parse_size("1G"),
                        help="size of the big file, e.g. 64M (1G); 0 skips phase 4")
    parser.add_argument("--checksum", choices=("sha512", "md5", "none"), default="sha512",
                        help="checksum both tools use (sha512); these are the ones they share")
    parser.add_argument("--skip-sr3", action="store_true", help="measure dd only")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each phase may take (120)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    return parser.parse_args(argv)


def _check_commands(args):
    needed = ["rabbitmqctl", "curl", NGINX, "dd_post", "dd_subscribe"]
    if not args.skip_sr3:
        needed += ["sr3", "sr3_post"]
    require(needed, "install them, or --skip-sr3 for sr3's")


def require(commands, fix):
    """Exit naming the commands not found, and `fix`."""
    missing = [c for c in commands if not shutil.which(c)]
    if missing:
        raise SystemExit(f"bench: not found: {', '.join(missing)} ({fix})")


def main(argv=None):
    args = parse_args(argv)
    _check_commands(args)
    return run(Bench, args, "ddbench-", report)


if __name__ == "__main__":
    sys.exit(main())
