#!/usr/bin/env python3
"""dd at scale on this machine, in one run: prints a table, each figure with the memory it took.

Five phases, each at full size or a fraction of it (--scale):
  post     dd_post of a tree of 200,000 files of 1 KiB: a tenth of it, then all of it;
           files/s and peak RSS of each (the tree is posted 4 times more, for the backlog)
  backlog  one dd_subscribe draining the 1,000,000 notices those posts queued (each file
           announced 5 times), of files already in place: rate and RSS at the start and the end
  nodupe   the duplicate store (dd.store.nodupe, SQLite) filled to 10,000 then 10,000,000
           keys: µs per claim of a key seen (a duplicate) and of a new one, at each size
  watch    dd_watch on a tree of 100,000 directories: start-up time, RSS, the inotify
           watches it holds and the limit (fs.inotify.max_user_watches)
  big      one 10 GiB file posted and mirrored by one dd_subscribe: MB/s and peak RSS

Run from the repository root (dd installed; RabbitMQ on 127.0.0.1:5672 with guest/guest and
rabbitmqctl; nginx-light):

    python bench/scale.py --scale 0.1               # a tenth of each: about 5 minutes
    python bench/scale.py                           # full size: about an hour, 25 GB of disk
    python bench/scale.py --scale 0.1 --only nodupe,watch

Disk is used a phase at a time and freed after it.  It measures and reports; it never
fails on a missed target.  See bench/README.rst.
"""
import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time

import psutil

import harness
from harness import (BROKER_HOST, Daemon, Mirror, PhaseError, format_table, make_big_file,
                     make_small_tree, print_notes, run, run_checked, size_text, start_nginx,
                     stop_group, wait_mirror)

PHASES = ("post", "backlog", "nodupe", "watch", "big")
FULL = dict(files=200_000, repeats=5, keys=10_000_000, directories=100_000, big=10 << 30)
LOOKUPS = 20_000            # claims timed at each size of the duplicate store
SAMPLE = 1.0                # seconds between samples of a draining subscriber
#: Runs a command (argv[2:]) with its output in the file argv[1]; prints its wall and CPU
#: seconds and peak RSS (its own process's, as RUSAGE_CHILDREN of this one) as JSON.
MEASURED = ("import json, resource, subprocess, sys, time\n"
            "started = time.monotonic()\n"
            "with open(sys.argv[1], 'w') as log:\n"
            "    status = subprocess.run(sys.argv[2:], stdout=log, stderr=log).returncode\n"
            "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
            "print(json.dumps(dict(status=status, seconds=time.monotonic() - started,\n"
            "                      cpu=usage.ru_utime + usage.ru_stime, rss=usage.ru_maxrss * 1024)))\n")


class Scale(harness.Bench):
    def __init__(self, args, work):
        super().__init__(args, work)
        self.rows = []          # [phase, what, value, unit, RSS MB]
        self.targets = []       # [target, wanted, measured, verdict]
        self.limits = {}
        self.size = {name: max(1, int(value * args.scale)) for name, value in FULL.items()}
        self.size["repeats"] = FULL["repeats"]
        self.size["big"] = max(1, self.size["big"] >> 20) << 20     # whole MiB

    def setup(self):
        self.make_vhost("ddscale")
        # A backlog of a million notices stays on disk, not in the shared broker's memory.
        run_checked(["rabbitmqctl", "-q", "set_policy", "-p", self.vhost, "lazy", ".*",
                     '{"queue-mode":"lazy"}', "--apply-to", "queues"], timeout=60, what="rabbitmqctl set_policy")
        self.broker.channel.exchange_declare("xscale", "topic", durable=True, auto_delete=False)
        self.src = self.work / "src"
        self.src.mkdir()
        nginx, self.base_url = start_nginx(self.work / "nginx", self.src)
        self.on_exit(stop_group, nginx)
        self.env = harness.dd_environment(self.work)
        self.broker_url = f"amqp://guest:guest@{BROKER_HOST}/{self.vhost}"

    def measure_limits(self):
        self.limits["scale"] = f"{self.args.scale:g} of full size"
        self.limits["free disk in the work directory at start"] = size_text(shutil.disk_usage(self.work).free)
        for name in ("fs.inotify.max_user_watches", "fs.inotify.max_user_instances"):
            self.limits[name] = _sysctl(name)

    def run_phases(self):
        for phase in self.args.only:
            try:
                getattr(self, f"phase_{phase}")()
            except (PhaseError, OSError, subprocess.SubprocessError) as error:
                self.notes.append(f"{phase}: {error}")
                self.rows.append([phase, "failed", "-", "", "-"])

    # -- helpers ----------------------------------------------------------------------------

    def subscriber_config(self, name, queue, directory):
        config = self.work / "config" / "subscribe" / f"{name}.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"broker {self.broker_url}\nexchange xscale\nqueue {queue}\nexpire 1h\n"
                          f"directory {directory}\n")
        run_checked(["dd_subscribe", "declare", name], env=self.env, timeout=60, what="dd_subscribe declare")

    def measured(self, command, log):
        """(wall s, CPU s, peak RSS bytes) of a command run to its end; a failure is a PhaseError."""
        result = subprocess.run([sys.executable, "-c", MEASURED, str(log), *command], env=self.env,
                                capture_output=True, text=True, timeout=self.args.timeout, check=True)
        figures = json.loads(result.stdout)
        if figures["status"]:
            raise PhaseError(f"{command[0]} exited with status {figures['status']}: see {log}")
        return figures["seconds"], figures["cpu"], figures["rss"]

    def post(self, path, log):
        return self.measured(["dd_post", "--post_broker", self.broker_url, "--post_exchange", "xscale",
                              "--post_base_url", self.base_url, "--post_base_dir", str(self.src),
                              str(path)], log)

    def row(self, phase, what, value, unit, rss=None):
        self.rows.append([phase, what, value, unit, "-" if rss is None else f"{rss / 1e6:,.1f}"])

    def target(self, name, wanted, measured, met):
        self.targets.append([name, wanted, measured, "met" if met else "MISSED"])

    # -- the phases -------------------------------------------------------------------------

    def phase_post(self):
        count = self.size["files"]
        tenth = max(1, count // 10)
        tree = self.src / "tree"
        print(f"bench: making {count:,} files", file=sys.stderr)
        for k in range(10):
            make_small_tree(tree / f"p{k}", tenth)
        count = 10 * tenth
        os.sync()
        # The backlog's queue holds every notice posted from now on.
        self.subscriber_config("backlog", "q_guest.scale.backlog", self.src)
        logs = self.work / "log"
        logs.mkdir(exist_ok=True)
        rates = {}
        for label, path, n in ((f"{tenth:,} files", tree / "p0", tenth), (f"{count:,} files", tree, count)):
            seconds, cpu, rss = self.post(path, logs / f"post-{n}.log")
            rates[n] = n / seconds
            self.row("post", f"dd_post, a tree of {label}", f"{n / seconds:,.0f}", f"files/s ({cpu:.1f} CPU s)", rss)
            self.target(f"dd_post {label}: RSS", "< 150 MB", f"{rss / 1e6:,.1f} MB", rss < 150e6)
        ratio = rates[count] / rates[tenth]
        self.target(f"dd_post files/s at {count:,} vs {tenth:,}", "within 20 %", f"{ratio:.2f}",
                    abs(1 - ratio) <= 0.2)
        print(f"bench: posting the tree {self.size['repeats'] - 1} more times for the backlog", file=sys.stderr)
        for n in range(self.size["repeats"] - 1):
            self.post(tree, logs / f"post-again-{n}.log")
        self.backlog = tenth + self.size["repeats"] * count

    def phase_backlog(self):
        if "post" not in self.args.only:
            raise PhaseError("the backlog is the post phase's notices: run it with --only post,backlog")
        total = self.backlog
        queue = "q_guest.scale.backlog"
        deadline = time.monotonic() + 10
        while self.broker.depth(queue)[0] < total and time.monotonic() < deadline:
            time.sleep(0.1)
        queued = self.broker.depth(queue)[0]
        daemon = Daemon(["dd_subscribe", "foreground", "backlog"], env=self.env, cwd=self.work,
                        log=self.work / "log" / "backlog.log")
        started = time.monotonic()
        samples = []            # (seconds, notices left, RSS bytes of the subscriber)
        process = psutil.Process(daemon.process.pid)
        try:
            while True:
                daemon.check()
                left = self.broker.depth(queue)[0]
                samples.append((time.monotonic() - started, left, process.memory_info().rss))
                if left == 0 or time.monotonic() - started > self.args.timeout:
                    break
                time.sleep(SAMPLE)
        finally:
            cpu, peak = daemon.stop()
        seconds = samples[-1][0]
        drained = queued - samples[-1][1]
        self.row("backlog", f"dd_subscribe draining {queued:,} notices of files in place",
                 f"{drained / seconds:,.0f}", f"notices/s ({cpu:.1f} CPU s)", peak)
        if samples[-1][1]:
            self.notes.append(f"backlog: {samples[-1][1]:,} notices left after --timeout {self.args.timeout:g} s")
        start, end = _tenths(samples, queued)
        if start and end:
            for label, (rate, rss) in (("first", start), ("last", end)):
                self.row("backlog", f"  its {label} tenth", f"{rate:,.0f}", "notices/s", rss)
            self.target("backlog: rate, last tenth vs first", "within 20 %", f"{end[0] / start[0]:.2f}",
                        abs(1 - end[0] / start[0]) <= 0.2)
            self.target("backlog: RSS, last tenth vs first", "flat (within 20 %)", f"{end[1] / start[1]:.2f}",
                        end[1] <= 1.2 * start[1])
        shutil.rmtree(self.src / "tree")

    def phase_nodupe(self):
        from dd.core.notice import Checksum
        from dd.store import nodupe
        path = self.work / "nodupe.sqlite"
        store = nodupe.Store(path, ttl=3600)
        db = sqlite3.connect(str(path), isolation_level=None)
        db.execute("PRAGMA synchronous=NORMAL")

        def key(n):
            return nodupe.key("/data", f"tree/d{n % 1000:03d}/f{n:09d}", Checksum("sha512", f"{n:0128x}"))

        filled = 0
        try:
            for size in sorted({min(10_000, self.size["keys"]), self.size["keys"]}):
                print(f"bench: filling the duplicate store to {size:,} keys", file=sys.stderr)
                now = time.time()
                while filled < size:
                    chunk = range(filled, min(size, filled + 100_000))
                    db.execute("BEGIN")
                    db.executemany("INSERT INTO claims (path, content, at, owner) VALUES (?, ?, ?, '')",
                                   ((*nodupe.row_of(key(n)), now) for n in chunk))
                    db.execute("COMMIT")
                    filled = chunk.stop
                seen = [key(random.randrange(size)) for _ in range(LOOKUPS)]
                fresh = [key(size + 10_000_000_000 + n) for n in range(LOOKUPS)]
                rss = psutil.Process().memory_info().rss
                for label, keys, expected in (("a duplicate", seen, False), ("a new key", fresh, True)):
                    started = time.perf_counter()
                    results = [store.claim(k) for k in keys]
                    micro = (time.perf_counter() - started) / len(keys) * 1e6
                    if any(r is not expected for r in results):
                        raise PhaseError(f"nodupe at {size:,}: claims of {label} were not all {expected}")
                    self.row("nodupe", f"claim of {label}, {size:,} keys", f"{micro:,.0f}", "µs", rss)
                    setattr(self, f"_claim_{expected}_{size}", micro)
                store.release(fresh)
            small, large = min(10_000, self.size["keys"]), self.size["keys"]
            self.row("nodupe", f"store file at {large:,} keys", f"{path.stat().st_size / 1e6:,.0f}", "MB")
            for expected, label in ((False, "duplicate"), (True, "new key")):
                ratio = getattr(self, f"_claim_{expected}_{large}") / getattr(self, f"_claim_{expected}_{small}")
                self.target(f"nodupe claim of a {label}: µs at {large:,} vs {small:,}", "<= 2x",
                            f"{ratio:.2f}x", ratio <= 2)
        finally:
            store.close()
            db.close()
            for leftover in self.work.glob("nodupe.sqlite*"):
                leftover.unlink()

    def phase_watch(self):
        count = self.size["directories"]
        top = max(1, int(count ** 0.5))
        tree = self.src / "watched"
        print(f"bench: making {count:,} directories", file=sys.stderr)
        for n in range(count):
            os.makedirs(tree / f"t{n % top:04d}" / f"d{n:06d}")
        directories = count + top + 1
        config = self.work / "config" / "watch" / "scale.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"post_broker {self.broker_url}\npost_exchange xscale\npost_base_url {self.base_url}\n"
                          f"post_base_dir {self.src}\npath {tree}\n")
        log = self.work / "log" / "watch.log"
        log.parent.mkdir(exist_ok=True)
        daemon = Daemon(["dd_watch", "foreground", "scale"], env=self.env, cwd=self.work, log=log)
        started = time.monotonic()
        try:
            while "change(s) since the last run" not in log.read_text(errors="replace"):
                daemon.check()
                if time.monotonic() - started > self.args.timeout:
                    raise PhaseError(f"dd_watch did not start within --timeout {self.args.timeout:g} s")
                time.sleep(0.05)
            seconds = time.monotonic() - started
            processes = [psutil.Process(daemon.process.pid)] + psutil.Process(daemon.process.pid).children(True)
            rss = {p.pid: p.memory_info().rss for p in processes}
            watches = sum(_watches(p.pid) for p in processes)
        finally:
            daemon.stop()
        limit = _sysctl("fs.inotify.max_user_watches")
        self.row("watch", f"dd_watch start-up, {directories:,} directories", f"{seconds:,.1f}", "s",
                 sum(rss.values()))
        self.row("watch", "  RSS of dd_watch, of its helper reading inotify", " / ".join(
            f"{v / 1e6:,.1f}" for v in rss.values()), "MB")
        self.row("watch", "  inotify watches held / needed / max_user_watches",
                 f"{watches:,} / {directories:,} / {limit:,}", "")
        self.target(f"dd_watch watches all {directories:,} directories", "every one", f"{watches:,}",
                    watches >= directories)
        shutil.rmtree(tree)

    def phase_big(self):
        size = self.size["big"]
        path = self.src / "big" / "big.bin"
        print(f"bench: making a {size_text(size)} file", file=sys.stderr)
        make_big_file(path, size)
        dst = self.work / "dst"
        try:
            self.subscriber_config("big", "q_guest.scale.big", dst)
            seconds, cpu, rss = self.post(path, self.work / "log" / "post-big.log")
            self.row("big", f"dd_post, 1 x {size_text(size)}", f"{size / seconds / 1e6:,.0f}",
                     f"MB/s ({cpu:.1f} CPU s)", rss)
            mirror = Mirror(dst, {"big/big.bin": size})
            daemon = Daemon(["dd_subscribe", "foreground", "big"], env=self.env, cwd=self.work,
                            log=self.work / "log" / "big.log")
            started = time.monotonic()
            try:
                arrival = wait_mirror(mirror, started, started + self.args.timeout, daemon)
            finally:
                cpu, rss = daemon.stop()
            if arrival.all is None:
                raise PhaseError(f"the big file was not mirrored within --timeout {self.args.timeout:g} s")
            self.row("big", "dd_subscribe mirroring it (launch to done)",
                     f"{size / (arrival.all - started) / 1e6:,.0f}", f"MB/s ({cpu:.1f} CPU s)", rss)
            self.target(f"dd_subscribe mirroring {size_text(size)}: peak RSS", "< 80 MB", f"{rss / 1e6:,.1f} MB",
                        rss < 80e6)
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
            shutil.rmtree(dst, ignore_errors=True)


def _tenths(samples, total):
    """((rate, RSS) over the first tenth drained, the same over the last), from the samples;
    None for one that fell between two samples."""
    def over(low, high):
        inside = [(t, left, rss) for t, left, rss in samples if low <= total - left <= high]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            return None
        return ((inside[0][1] - inside[-1][1]) / (inside[-1][0] - inside[0][0]),
                max(rss for _, _, rss in inside))
    return over(0, total / 10 + 1), over(total * 0.9 - 1, total)


def _sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _watches(pid):
    """The inotify watches a process holds, as its fdinfo lists them."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                count += sum(line.startswith("inotify wd:") for line in f)
        except OSError:
            pass
    return count


def report(bench):
    print(f"\ndd at scale: {bench.args.scale:g} of full size; machine: {os.cpu_count()} CPUs, "
          f"{psutil.virtual_memory().total / (1 << 30):.0f} GiB, load average {os.getloadavg()[0]:.2f}\n")
    print(format_table(["phase", "what", "value", "unit", "RSS MB"], bench.rows))
    print()
    print(format_table(["machine (same run)", "value"], [[k, f"{v:,}" if isinstance(v, int) else str(v)]
                                                          for k, v in bench.limits.items()]))
    print()
    print(format_table(["target", "wanted", "measured", ""], bench.targets))
    print("\nRSS MB: peak resident memory of the process measured (post, big: VmHWM; backlog tenths:\n"
          "the highest sample in it; nodupe: the bench's own process; watch: both processes)")
    print_notes(bench.notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the full sizes (1)")
    parser.add_argument("--only", default=",".join(PHASES), help=f"phases to run ({','.join(PHASES)})")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds each phase may take (1800)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    args = parser.parse_args(argv)
    args.only = [p for p in PHASES if p in args.only.split(",")]
    if not 0 < args.scale <= 1:
        parser.error("--scale is a fraction: more than 0, at most 1")
    return args


def main(argv=None):
    args = parse_args(argv)
    missing = [c for c in ("rabbitmqctl", "dd_post", "dd_subscribe", "dd_watch") if not shutil.which(c)]
    if missing:
        raise SystemExit(f"bench: not found: {', '.join(missing)} (install dd, RabbitMQ)")
    return run(Scale, args, "ddscale-", report)


if __name__ == "__main__":
    sys.exit(main())
