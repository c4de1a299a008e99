"""The machinery the benchmarks share: child processes and their CPU and memory, nginx,
the broker, trees to move, waiting for a mirror to complete, and printing tables.

bench/core.py, parts.py, watch.py and netem.py measure; this module only runs things
and counts.
"""
import argparse
import atexit
import collections
import compileall
import contextlib
import dataclasses
import hashlib
import os
import resource
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import amqp
import psutil

import dd
from dd.pump import nginx
from dd.core.options import parse_size

BROKER_HOST, BROKER_PORT = "127.0.0.1", 5672
NGINX = "/usr/sbin/nginx"
MOSQUITTO = "/usr/sbin/mosquitto"
SMALL_SIZE = 1024
PER_DIR = 100               # files per directory of a small tree
STOP_GRACE = 10.0           # seconds a stopped process gets before SIGKILL
SAMPLE_EVERY = 1.0          # seconds between CPU/RSS samples of a subscriber (a sample costs ~10 ms)
NOTICE_BYTES = 600          # about a dd notice with a sha512 checksum
HASH_BYTES = 256 << 20      # data hashed to measure the checksum's speed


class PhaseError(Exception):
    """A phase could not be measured; its message goes under the table."""


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
                             f"{last_line(self.log)}")

    def stop(self):
        """Stop it; return (CPU seconds, peak RSS bytes of its largest process)."""
        self.sample(force=True)
        stop_group(self.process, members=list(self._cpu))
        return sum(self._cpu.values()), max(self._hwm.values(), default=0)


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def last_line(path):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1][-300:] if lines else "(empty log)"


def run_checked(command, *, timeout, what, **kwargs):
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


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def start_nginx(base, root, *, host="127.0.0.1", prefix=(), directives="", accepts=_accepts):
    """nginx on a free port of `host` serving `root`, its command after `prefix` (e.g.
    ip netns exec), with more http `directives`; returns (process, base URL) once
    `accepts(host, port)` (from where nginx can be reached)."""
    base.mkdir()
    port = free_port()
    text = nginx.config(base=base, root=root, port=port, host=host, user=("root", "root"))
    (base / "nginx.conf").write_text(text.replace("sendfile on;", f"sendfile on;\n    {directives}"))
    process = spawn([*prefix, *nginx.command(NGINX, base)],
                    env=os.environ, cwd=base, log=base / "nginx.out")
    deadline = time.monotonic() + 10
    while not accepts(host, port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"bench: nginx did not start on port {port}: {last_line(base / 'nginx.out')}")
        time.sleep(0.05)
    return process, f"http://{host}:{port}/"


def start_mosquitto(base):
    """A Mosquitto of the bench's own on a free port (never the machine's on 1883), anonymous,
    keeping every message queued for a session (max_queued_messages 0); returns (process, port)."""
    base.mkdir()
    port = free_port()
    (base / "mosquitto.conf").write_text(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\n"
        f"max_inflight_messages 0\nlog_dest file {base / 'mosquitto.log'}\n")
    process = spawn([MOSQUITTO, "-c", str(base / "mosquitto.conf")], env=os.environ, cwd=base,
                    log=base / "mosquitto.out")
    return process, _listening(process, port, "mosquitto", base / "mosquitto.out")


def start_redis(base):
    """A Redis of the bench's own on a free loopback port, keeping nothing on disk; returns
    (process, port)."""
    base.mkdir()
    port = free_port()
    process = spawn(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base),
                     "--save", "", "--appendonly", "no"], env=os.environ, cwd=base, log=base / "redis.out")
    return process, _listening(process, port, "redis-server", base / "redis.out")


def _listening(process, port, what, log):
    """`port`, once `process` accepts connections on it; SystemExit with its last words if it died
    or took more than 10 s."""
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return port
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench: {what} did not start on port {port}: {last_line(log)}") from None
            time.sleep(0.05)


def dd_environment(root, **extra):
    """The environment of dd commands whose configuration, state and log directories are
    below `root` (DD_CONFIG_DIR, DD_STATE_DIR, DD_LOG_DIR), apart from the user's own."""
    return dict(os.environ, **extra, **{f"DD_{kind.upper()}_DIR": str(Path(root) / kind)
                                        for kind in ("config", "state", "log")})


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


class ExchangeWatch(threading.Thread):
    """Reads what reaches some exchanges, through private queues bound with '#', on a thread
    of its own; a subclass says what it notes of each message (_on_message)."""

    def __init__(self, vhost, exchanges):
        super().__init__(daemon=True)
        self._done = threading.Event()
        self._connection = amqp_connect(vhost)
        channel = self._connection.channel()
        for exchange in exchanges:
            queue, _, _ = channel.queue_declare("", exclusive=True, auto_delete=True)
            channel.queue_bind(queue, exchange, "#")
            channel.basic_consume(queue, callback=self._on_message, no_ack=True)
        self.start()

    def _on_message(self, message):
        raise NotImplementedError

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
        with contextlib.suppress(Exception):     # the broker may be gone already
            self._connection.close()


class NoticeWatch(ExchangeWatch):
    """Notes when notices reach an exchange: the first, the last, how many."""

    def __init__(self, vhost, exchange):
        self.first = self.last = None
        self.count = 0
        super().__init__(vhost, [exchange])

    def _on_message(self, message):
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.count += 1


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
    cpu_before = children_cpu()
    while True:
        now = time.monotonic()
        if mirror.poll() and arrival.first is None:
            arrival.first = now
        if mirror.done == mirror.total:
            arrival.all = now
            break
        if poster is not None and arrival.post_end is None and poster.poll() is not None:
            # Reaped just now, and nothing else was since cpu_before: its CPU alone.
            arrival.post_end, arrival.post_cpu = now, children_cpu() - cpu_before
            if poster.returncode:
                raise PhaseError(f"post exited with status {poster.returncode}: {last_line(poster_log)}")
        daemon.check()
        if now > deadline:
            break
        # Fine polling until the first file, for the latency; coarser after, to spare the CPU.
        time.sleep(0.005 if arrival.first is None else 0.02)
    if poster is not None and arrival.post_end is None:
        try:
            poster.wait(max(deadline - time.monotonic(), 0.1))
            arrival.post_end, arrival.post_cpu = time.monotonic(), children_cpu() - cpu_before
        except subprocess.TimeoutExpired:
            pass
    return arrival


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
    cpu_before = children_cpu()
    started = time.monotonic()
    run_checked(command, timeout=timeout, what=command[0])
    return time.monotonic() - started, children_cpu() - cpu_before


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


def size_text(nbytes):
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= factor and nbytes % factor == 0:
            return f"{nbytes // factor} {unit}"
    return f"{nbytes} B"


def rate_text(amount, seconds):
    return f"{amount / seconds:,.0f}" if seconds else "-"


def cell(value, form):
    return "-" if value is None else format(value, form)


def format_table(headers, rows):
    widths = [max(len(str(c)) for c in column) for column in zip(headers, *rows)]
    lines = []
    for row in [headers, ["-" * w for w in widths]] + rows:
        cells = [str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def byte_size(text):
    try:
        return parse_size(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 1G, 64M or 512k, got {text!r}") from None


def create_cost(directory, count=100):
    """Seconds to create one small file in a new directory under `directory` (the files stay:
    deleting them would slow the next creates)."""
    probe = Path(tempfile.mkdtemp(prefix="create-probe-", dir=directory))
    started = time.perf_counter()
    for i in range(count):
        (probe / str(i)).write_bytes(bytes(SMALL_SIZE))
    return (time.perf_counter() - started) / count


def spread_parent():
    """The directory work directories are made in: ext4's top-directory flag (chattr +T) on it
    puts each in a block group of its own choosing.  Without a journal, as on this VM, ext4
    steps over every inode deleted in the last minutes on each create, and a work directory
    beside the last run's, in /tmp's block group, would make this run's small files pay,
    dd's, sr3's and curl's alike, for the last one's clean-up (2,000 creates: 0.06 s quiet,
    1.2 s there)."""
    temp = Path(tempfile.gettempdir())
    parent = temp / f"ddbench-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        parent.mkdir(mode=0o700)
    mine = parent.lstat()
    if not stat.S_ISDIR(mine.st_mode) or mine.st_uid != os.getuid():
        return temp     # planted by someone else: never work inside it
    # Elsewhere than ext4, or without chattr, the flag is only a hint lost.
    with contextlib.suppress(OSError):
        subprocess.run(["chattr", "+T", str(parent)], stderr=subprocess.DEVNULL, check=False)
    return parent


class Bench:
    """What every bench holds: clean-ups run in reverse at its end, and its own vhost."""

    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.notes = []
        self._cleanups = []     # undone in reverse order, at most once

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
        run_checked(["rabbitmqctl", "-q", "add_vhost", self.vhost], timeout=60, what="rabbitmqctl add_vhost")
        self.on_exit(run_checked, ["rabbitmqctl", "-q", "delete_vhost", self.vhost], timeout=120,
                     what="rabbitmqctl delete_vhost")
        run_checked(["rabbitmqctl", "-q", "set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*"],
                    timeout=60, what="rabbitmqctl set_permissions")
        try:
            self.broker = Broker(self.vhost)
        except (OSError, amqp.exceptions.AMQPError) as error:
            raise SystemExit(f"bench: cannot reach RabbitMQ at {BROKER_HOST}:{BROKER_PORT} as guest: "
                             f"{error}") from None
        self.on_exit(self.broker.close)


def run(bench_class, args, prefix, report_function):
    """Set up, run and report a bench in a new work directory; whatever ends it,
    its processes, vhost and (unless --keep) work directory go.  The exit status."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=spread_parent()))
    bench = bench_class(args, work)
    if args.keep:
        bench.on_exit(print, f"bench: work directory kept: {work}", file=sys.stderr)
    else:
        bench.on_exit(shutil.rmtree, work, True)
    # Whatever ends the run, child processes stop and the vhost goes.
    bench.on_exit(stop_all)
    atexit.register(bench.cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # An installed dd is byte-compiled, as sr3 is; a checkout run with PYTHONDONTWRITEBYTECODE
    # would make every dd process compile its modules first.
    compileall.compile_dir(os.path.dirname(dd.__file__), quiet=1)
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


def print_notes(notes):
    """What went wrong in a run, under its table."""
    if notes:
        print("notes")
        for note in notes:
            print(f"  {note}")
