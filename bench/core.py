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
import atexit
import collections
import contextlib
import dataclasses
import getpass
import itertools
import hashlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import amqp
import psutil

from dd import nginx
from dd.options import parse_size

BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
NGINX = "/usr/sbin/nginx"
SMALL_SIZE = 1024
PER_DIR = 100               # files per directory of a small tree
IDLE_SETTLE = 1.0           # seconds a subscriber sits connected before it counts as idle
STOP_GRACE = 10.0           # seconds a stopped process gets before SIGKILL
SAMPLE_EVERY = 1.0          # seconds between CPU/RSS samples of a subscriber (a sample costs ~10 ms)
NOTICE_BYTES = 600          # about a dd notice with a sha512 checksum
HASH_BYTES = 256 << 20      # data hashed to measure the checksum's speed


class PhaseError(Exception):
    """A phase could not be measured; its message goes under the table."""


# -- child processes -----------------------------------------------------------

_started = []               # every Popen of this run, stopped at exit


def _alive(pid):
    """Running and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _vm_hwm(pid):
    """Peak resident set of `pid` in bytes (VmHWM), 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def spawn(command, *, env, cwd, log):
    """Start `command` in its own session, so that it and its workers stop as one group."""
    with open(log, "ab") as out:
        process = subprocess.Popen(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    _started.append(process)
    return process


def stop_group(process, members=()):
    """SIGTERM the process group, wait for it and `members` (pids seen in it), then SIGKILL."""
    def running():
        # sr3's leader exits before its worker: every member counts.
        return process.poll() is None or any(_alive(pid) for pid in members)

    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not running():
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + STOP_GRACE
        while running() and time.monotonic() < deadline:
            time.sleep(0.02)
    print(f"bench: process group {process.pid} survived SIGKILL", file=sys.stderr)


def stop_all():
    for process in _started:
        stop_group(process)


class Daemon:
    """A subscriber: its process group is sampled for CPU time and peak RSS, and stopped as one."""

    def __init__(self, command, *, env, cwd, log):
        self.log = log
        self.process = spawn(command, env=env, cwd=cwd, log=log)
        self._root = psutil.Process(self.process.pid)
        self._cpu = {}          # pid -> user+system seconds when last sampled
        self._hwm = {}          # pid -> VmHWM bytes
        self._next_sample = 0.0

    def sample(self, force=False):
        now = time.monotonic()
        if not force and now < self._next_sample:
            return
        self._next_sample = now + SAMPLE_EVERY
        try:
            processes = [self._root] + self._root.children(recursive=True)
        except psutil.Error:
            return
        for p in processes:
            with contextlib.suppress(psutil.Error):
                times = p.cpu_times()
                self._cpu[p.pid] = times.user + times.system
                self._hwm[p.pid] = max(self._hwm.get(p.pid, 0), _vm_hwm(p.pid))

    def check(self):
        """Sample, and fail the phase if the subscriber has exited."""
        self.sample()
        if self.process.poll() is not None:
            raise PhaseError(f"subscriber exited with status {self.process.returncode}: "
                             f"{_last_line(self.log)}")

    def stop(self):
        """Stop it; return (CPU seconds, peak RSS bytes of its largest process)."""
        self.sample(force=True)
        stop_group(self.process, members=list(self._cpu))
        return sum(self._cpu.values()), max(self._hwm.values(), default=0)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _last_line(path):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"


def _run(command, *, timeout, what, **kwargs):
    """Run a setup command; a failure is one line naming it."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SystemExit(f"bench: {what}: {error}") from None
    if result.returncode:
        detail = (result.stderr or result.stdout).strip().splitlines() or ["no output"]
        raise SystemExit(f"bench: {what} failed (status {result.returncode}): {detail[-1]}")
    return result.stdout


# -- servers ----------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(base, root, *, host="127.0.0.1", prefix=(), directives=""):
    """nginx on a free port of `host` serving `root`, its command after `prefix` (e.g.
    ip netns exec), with more http `directives`; returns (process, base URL)."""
    base.mkdir()
    port = free_port()
    text = nginx.config(base=base, root=root, port=port, host=host)
    (base / "nginx.conf").write_text(text.replace("sendfile on;", f"sendfile on;\n    {directives}"))
    process = spawn([*prefix, *nginx.command(NGINX, base)],
                    env=os.environ, cwd=base, log=base / "nginx.out")
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return process, f"http://{host}:{port}/"
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: nginx did not start on port {port}: "
                                 f"{_last_line(base / 'nginx.out')}") from None
            time.sleep(0.05)


def amqp_connect(vhost):
    connection = amqp.Connection(host=f"{BROKER_HOST}:{BROKER_PORT}", userid="guest", password="guest",
                                 virtual_host=vhost, connect_timeout=5)
    connection.connect()
    return connection


class Broker:
    """The bench's own view of the vhost: queue depths and purges."""

    def __init__(self, vhost):
        self.connection = amqp_connect(vhost)
        self.channel = self.connection.channel()

    def depth(self, queue):
        """(messages ready, consumers) of `queue`."""
        _, messages, consumers = self.channel.queue_declare(queue, passive=True)
        return messages, consumers

    def purge(self, queue):
        self.channel.queue_purge(queue)

    def close(self):
        with contextlib.suppress(Exception):
            self.connection.close()


class NoticeWatch(threading.Thread):
    """Notes when notices reach an exchange, through a private queue bound with '#'."""

    def __init__(self, vhost, exchange):
        super().__init__(daemon=True)
        self.first = self.last = None
        self.count = 0
        self._done = threading.Event()
        self._connection = amqp_connect(vhost)
        channel = self._connection.channel()
        queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
        channel.queue_bind(queue, exchange, "#")
        channel.basic_consume(queue, callback=self._on_message, no_ack=True)
        self.start()

    def _on_message(self, message):
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.count += 1

    def run(self):
        while not self._done.is_set():
            try:
                self._connection.drain_events(timeout=0.1)
            except socket.timeout:
                pass
            except (OSError, amqp.exceptions.AMQPError):
                return

    def close(self):
        self._done.set()
        self.join(2)
        with contextlib.suppress(Exception):
            self._connection.close()


# -- source trees and mirrors ------------------------------------------------------

def make_small_tree(root, count):
    """`count` files of 1 KiB of random data, PER_DIR per directory; returns {rel_path: size}."""
    files = {}
    for i in range(count):
        rel = f"{root.name}/d{i // PER_DIR:03d}/f{i:05d}"
        path = root.parent / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(SMALL_SIZE))
        files[rel] = SMALL_SIZE
    return files


def make_big_file(path, size):
    path.parent.mkdir(parents=True, exist_ok=True)
    block = bytearray(os.urandom(1 << 20))
    with open(path, "wb") as f:
        written = 0
        while written < size:
            block[:8] = written.to_bytes(8, "big")   # every MiB differs
            n = min(len(block), size - written)
            f.write(block[:n])
            written += n


def warm(path):
    """Read a file, or every file of a tree, once.  This VM pages out what has not been
    touched for about 30 s (kdamond), and the first reader after that would pay for it:
    each post starts on data in memory, whichever tool runs first."""
    paths = [path] if path.is_file() else [Path(top, name) for top, _, names in os.walk(path)
                                            for name in names]
    for each in paths:
        with open(each, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


class Mirror:
    """Which expected files are present under `root` with their full size."""

    def __init__(self, root, files):
        self.root = root
        self.total = len(files)
        self.done = 0
        self._pending = collections.defaultdict(dict)     # directory -> {name: size}
        for rel, size in files.items():
            directory, name = os.path.split(rel)
            self._pending[directory][name] = size

    def poll(self):
        for directory in list(self._pending):
            names = self._pending[directory]
            try:
                entries = os.scandir(os.path.join(self.root, directory))
            except (FileNotFoundError, NotADirectoryError):
                continue
            with entries:
                for entry in entries:
                    size = names.get(entry.name)
                    if size is not None and entry.stat(follow_symlinks=False).st_size == size:
                        del names[entry.name]
                        self.done += 1
            if not names:
                del self._pending[directory]
        return self.done


@dataclasses.dataclass
class Arrival:
    """When things happened in a mirroring phase (monotonic times), and what it cost."""

    started: float = None       # the subscriber's launch, or the post's when it is idle
    first_notice: float = None  # the first notice reached the exchange
    first: float = None         # the first file is complete
    all: float = None           # the last one is
    post_end: float = None      # the posting process (if any) exited
    post_cpu: float = None
    cpu: float = None           # the subscriber's
    rss: int = None


def wait_mirror(mirror, started, deadline, daemon, poster=None, poster_log=None):
    """Poll until every file is complete, the deadline passes, or something fails."""
    arrival = Arrival(started)
    cpu_before = _children_cpu()
    while True:
        now = time.monotonic()
        if mirror.poll() and arrival.first is None:
            arrival.first = now
        if mirror.done == mirror.total:
            arrival.all = now
            break
        if poster is not None and arrival.post_end is None and poster.poll() is not None:
            # Reaped just now, and nothing else was since cpu_before: its CPU alone.
            arrival.post_end, arrival.post_cpu = now, _children_cpu() - cpu_before
            if poster.returncode:
                raise PhaseError(f"post exited with status {poster.returncode}: {_last_line(poster_log)}")
        daemon.check()
        if now > deadline:
            break
        # Fine polling until the first file, for the latency; coarser after, to spare the CPU.
        time.sleep(0.005 if arrival.first is None else 0.02)
    if poster is not None and arrival.post_end is None:
        try:
            poster.wait(max(deadline - time.monotonic(), 0.1))
            arrival.post_end, arrival.post_cpu = time.monotonic(), _children_cpu() - cpu_before
        except subprocess.TimeoutExpired:
            pass
    return arrival


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


class DdTool(Tool):
    name = "dd"

    def configure(self):
        env = dict(os.environ)
        for kind in ("config", "state", "log"):
            env[f"DD_{kind.upper()}_DIR"] = str(self.dir / kind)
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
        _run(["dd_subscribe", "declare", "bench"], env=self.env, cwd=self.dir, timeout=30,
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
            _run(["sr3", "declare", config], env=self.env, cwd=self.dir, timeout=60,
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


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rows = []
        self.notes = []
        self.limits = {}        # name -> (value, unit)
        self.curl_big = {}      # tool name -> curl's MB/s on the big file just before its mirror
        # Other work on the machine skews every number: the report shows how busy it was.
        self.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        self._cleanups = []     # undone in reverse order, at most once

    # setup and cleanup

    def on_exit(self, function, *arguments, **keywords):
        self._cleanups.append((function, arguments, keywords))

    def cleanup(self):
        while self._cleanups:
            function, arguments, keywords = self._cleanups.pop()
            try:
                function(*arguments, **keywords)
            except (Exception, SystemExit) as error:  # noqa: BLE001 - clean up the rest regardless
                print(f"bench: cleanup: {function.__name__}: {error}", file=sys.stderr)

    def make_vhost(self, name):
        """A private vhost for the run, removed at exit, and self.broker on it."""
        self.vhost = f"{name}-{os.getpid()}"
        _run(["rabbitmqctl", "-q", "add_vhost", self.vhost], timeout=60, what="rabbitmqctl add_vhost")
        self.on_exit(_run, ["rabbitmqctl", "-q", "delete_vhost", self.vhost], timeout=60,
                     what="rabbitmqctl delete_vhost")
        _run(["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
             timeout=60, what="rabbitmqctl set_permissions")
        try:
            self.broker = Broker(self.vhost)
        except (OSError, amqp.exceptions.AMQPError) as error:
            raise SystemExit(f"bench: cannot reach RabbitMQ at {BROKER_HOST}:{BROKER_PORT} as guest: "
                             f"{error}") from None
        self.on_exit(self.broker.close)

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
        rate = publish_rate(self.vhost, count)
        self.limits["RabbitMQ publish, confirmed (1 py-amqp process)"] = (f"{rate:,.0f}", "msg/s")

        curl_dir = self.work / "curl"
        curl_config = self.work / "curl.conf"
        curl_config.write_text("".join(f'url = "{self.base_url}{rel}"\noutput = "{curl_dir / rel}"\n'
                                       for rel in self.small["small_a"]))
        seconds, cpu = timed_run(["curl", "-sS", "--fail", "--create-dirs", "-K", str(curl_config)],
                                 timeout=args.timeout)
        self.limits[f"curl, {args.small_count} x 1 KiB, keep-alive (1 process)"] = (
            _rate(args.small_count, seconds), f"files/s  ({cpu:.2f} CPU s)")
        # curl's copies stay until the end, for the reason Tool.clear_destination gives.
        # curl's big download is measured in phase 4, just before each tool's (curl_big_for).

        self.hash_speed = checksum_speed(args.checksum)
        if self.hash_speed:
            self.limits[f"hashlib {args.checksum}"] = (f"{self.hash_speed:,.0f}", "MB/s")

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
        cpu_before = _children_cpu()
        started = time.monotonic()
        process = tool.post(tree, log)
        try:
            process.wait(self.args.timeout)
        except subprocess.TimeoutExpired:
            stop_group(process)
            self.rows.append(Row("1 post small", tool.name, status="timeout"))
            return
        seconds, cpu = time.monotonic() - started, _children_cpu() - cpu_before
        if process.returncode:
            raise PhaseError(f"post exited with status {process.returncode}: {_last_line(log)}")
        count = self.args.small_count
        self.rows.append(Row("1 post small", tool.name, seconds, count, count * SMALL_SIZE, cpu))
        # The queue must hold the notices before phase 2 starts its subscriber.
        deadline = time.monotonic() + 10
        while self.broker.depth(tool.queue)[0] < count:
            if time.monotonic() > deadline:
                raise PhaseError(f"queue {tool.queue} holds {self.broker.depth(tool.queue)[0]} of "
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
        self.curl_big_for(tool)
        files = {str(self.big_path.relative_to(self.src)): self.args.big_size}
        arrival = self._posted_to_idle(tool, "big", self.big_path, files)
        self.rows.append(_span("4 post big", tool, arrival.started, arrival.post_end, files,
                               arrival.post_cpu))
        self.rows.append(_span("4 first notice -> mirrored", tool, arrival.first_notice, arrival.all,
                               files, arrival.cpu, arrival.rss))

    def curl_big_for(self, tool):
        """curl fetches the big file just before `tool` mirrors it, into memory as fresh as
        the tool's: this VM gives the host back memory freed a while ago, and writing a
        file into such pages costs about 5 s of system time per GiB (measured: curl at
        150-180 MB/s into them, 550 MB/s into pages freed a moment before)."""
        destination = tool.dir / "curl-big.bin"
        warm(self.big_path)
        seconds, cpu = timed_run(["curl", "-sS", "--fail", "-o", str(destination),
                                  f"{self.base_url}big/big.bin"], timeout=self.args.timeout)
        self.curl_big[tool.name] = self.args.big_size / seconds / 1e6
        self.limits[f"curl, 1 x {_size(self.args.big_size)}, just before {tool.name}'s mirror"] = (
            f"{self.curl_big[tool.name]:,.0f}", f"MB/s  ({cpu:.2f} CPU s)")

    def _posted_to_idle(self, tool, phase, path, files):
        """Start a subscriber, let it idle, post `path`; time until `files` are all mirrored."""
        self.broker.purge(tool.queue)     # leftovers of a phase that timed out
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
            watch = NoticeWatch(self.vhost, tool.exchange)
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


def _span(phase, tool, start, end, files=None, cpu=None, rss=None):
    """A row for the time from `start` to `end`; `files` ({rel_path: size}) give its rates."""
    if start is None or end is None:
        return Row(phase, tool.name, cpu=cpu, rss=rss, status="timeout")
    files = files or {}
    small = files and all(size == SMALL_SIZE for size in files.values())
    return Row(phase, tool.name, end - start, len(files) if small else 0, sum(files.values()), cpu, rss)


def publish_rate(vhost, count):
    """Messages per second one py-amqp connection publishes with pipelined confirms."""
    connection = amqp_connect(vhost)
    try:
        channel = connection.channel()
        channel.exchange_declare("xlimit", "topic", durable=True, auto_delete=False)
        # Persistent messages to a durable queue: what the tools' notices cost the broker.
        channel.queue_declare("q_guest.bench.limit", durable=True, auto_delete=False)
        channel.queue_bind("q_guest.bench.limit", "xlimit", "#")
        confirmed = {"tag": 0, "nacks": 0}

        def on_ack(tag, multiple):
            confirmed["tag"] = max(confirmed["tag"], tag)

        def on_nack(tag, multiple):
            confirmed["nacks"] += 1
            on_ack(tag, multiple)

        channel.events["basic_ack"].add(on_ack)
        channel.events["basic_nack"].add(on_nack)
        channel.confirm_select()
        body = b"x" * NOTICE_BYTES
        started = time.monotonic()
        for _ in range(count):
            channel.basic_publish(amqp.Message(body, delivery_mode=2, content_type="application/json"),
                                  exchange="xlimit", routing_key="v02.post.bench")
        deadline = started + 60
        while confirmed["tag"] < count and time.monotonic() < deadline:
            with contextlib.suppress(socket.timeout):
                connection.drain_events(timeout=1)
        seconds = time.monotonic() - started
        channel.queue_delete("q_guest.bench.limit")
        channel.exchange_delete("xlimit")
    finally:
        connection.close()
    if confirmed["tag"] < count or confirmed["nacks"]:
        raise SystemExit(f"bench: RabbitMQ confirmed {confirmed['tag'] - confirmed['nacks']} of "
                         f"{count} test messages")
    return count / seconds


def timed_run(command, *, timeout):
    """(wall seconds, CPU seconds) of a command that must succeed."""
    cpu_before = _children_cpu()
    started = time.monotonic()
    _run(command, timeout=timeout, what=command[0])
    return time.monotonic() - started, _children_cpu() - cpu_before


def checksum_speed(method):
    """MB/s of hashlib for `method` in 1 MiB updates, as the tools feed it; None for 'none'."""
    if method == "none":
        return None
    block = os.urandom(1 << 20)
    hasher = hashlib.new(method)
    started = time.monotonic()
    for _ in range(HASH_BYTES >> 20):
        hasher.update(block)
    return HASH_BYTES / (time.monotonic() - started) / 1e6


# -- the report ------------------------------------------------------------------------------

def _size(nbytes):
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor} {unit}"
    return f"{nbytes} B"


def _rate(amount, seconds):
    return f"{amount / seconds:,.0f}" if seconds else "-"


def _cell(value, form):
    return "-" if value is None else format(value, form)


def format_table(headers, rows):
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers, ["-" * w for w in widths]] + rows:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


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
        files = _rate(r.files, r.seconds) if ok and r.files else "-"
        mbs = f"{r.nbytes / r.seconds / 1e6:,.1f}" if ok and r.nbytes else "-"
        ratio = cpu_ratio = ""
        other = by_key.get((r.phase, "sr3"))
        if r.tool == "dd" and other:
            if ok and not other.status and other.seconds:
                ratio = f"{r.seconds / other.seconds:.2f}"
            if r.cpu and other.cpu:
                cpu_ratio = f"{r.cpu / other.cpu:.2f}"
        lines.append([r.phase if r.tool == "dd" or (r.phase, "dd") not in by_key else "", r.tool,
                      time_cell, files, mbs, _cell(r.cpu, ".2f"),
                      _cell(r.rss / 1e6 if r.rss else None, ".1f"), ratio, cpu_ratio])
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
        shown = "not measured" if row is None else f"{value:,.{1 if value < 100 else 0}f} {unit}"
        verdict = "" if row is None else ("met" if met else "MISSED")
        lines.append([name, wanted, shown, verdict])

    post = dd("1 post small")
    target("dd_post small files", ">= 3,000 files/s", post,
           post and post.files / post.seconds, "files/s", post and post.files / post.seconds >= 3000)
    full = dd("2 launch -> all files")
    target("one dd_subscribe, full queue", ">= 1,000 files/s", full,
           full and full.files / full.seconds, "files/s", full and full.files / full.seconds >= 1000)
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
        if bench.hash_speed:
            target("post big file", f">= 0.9 x {bench.args.checksum} = {0.9 * bench.hash_speed:,.0f} MB/s",
                   big, speed, "MB/s", big and speed >= 0.9 * bench.hash_speed)
        mirror = dd("4 first notice -> mirrored")
        limit = min(v for v in (bench.curl_big.get("dd"), bench.hash_speed) if v)
        speed = mirror and mirror.nbytes / mirror.seconds / 1e6
        target("mirror big file", f">= 0.85 x min(curl, {bench.args.checksum}) = {0.85 * limit:,.0f} MB/s",
               mirror, speed, "MB/s", mirror and speed >= 0.85 * limit)
    peaks = [r.rss for r in rows if r.tool == "dd" and r.rss]
    peak = max(peaks, default=None)
    target("dd_subscribe peak RSS (all phases)", "< 80 MB", peak, peak and peak / 1e6, "MB",
           peak and peak < 80e6)
    return format_table(["target", "wanted", "dd", ""], lines)


def report(bench):
    args = bench.args
    big = _size(args.big_size) if args.big_size else "(none)"
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
    if bench.notes:
        print("notes")
        for note in bench.notes:
            print(f"  {note}")
        if not args.keep:
            print("  (run with --keep to inspect the logs)")


def _sr3_version():
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("metpx-sr3")
    except PackageNotFoundError:
        return "?"


# -- main ------------------------------------------------------------------------------------

def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _byte_size(text):
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 1G, 64M or 512k, got {text!r}") from None


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=_positive, default=2000, help="small files per tree (2000)")
    parser.add_argument("--big-size", type=_byte_size, default=parse_size("1G"),
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
    missing = [c for c in needed if not shutil.which(c)]
    if missing:
        raise SystemExit(f"bench: not found: {', '.join(missing)} (install them, or --skip-sr3 for sr3's)")


def main(argv=None):
    args = parse_args(argv)
    _check_commands(args)
    return run(Bench, args, "ddbench-", report)


def run(bench_class, args, prefix, report_function):
    """Set up, run and report a bench in a new work directory; whatever ends it,
    its processes, vhost and (unless --keep) work directory go.  The exit status."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    bench = bench_class(args, work)
    if args.keep:
        bench.on_exit(print, f"bench: work directory kept: {work}", file=sys.stderr)
    else:
        bench.on_exit(shutil.rmtree, work, True)
    # Whatever ends the run, child processes stop and the vhost goes.
    bench.on_exit(stop_all)
    atexit.register(bench.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        print(f"bench: setting up in {work}", file=sys.stderr)
        bench.setup()
        print("bench: running", file=sys.stderr)
        bench.measure_limits()
        bench.run_phases()
        report_function(bench)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        bench.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
