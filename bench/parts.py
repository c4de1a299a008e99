#!/usr/bin/env python3
"""Segmented transfer on loopback: one big file moved whole and in parts by 1, 2
and 4 subscriber instances sharing a queue, dd beside sr3 (its blockSize mode),
and rate_max's accuracy; prints a table.

Run from the repository root, with what bench/core.py needs (see bench/README.rst):

    python bench/parts.py                               # 1 GiB, 64 MiB parts, 1 2 4 instances
    python bench/parts.py --size 256M --instances 1 2   # quick look
    python bench/parts.py --skip-sr3 --skip-rate        # dd's parts only

It measures and reports; it never fails on a missed target.
"""
import argparse
import os
import sys
import time

import xxhash

import core
import harness
from harness import Daemon, PhaseError, format_table

BLOCK_WHOLE = "1"   # blocksize 1: never split, in both tools


def digest(path):
    hasher = xxhash.xxh3_128()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(1 << 22):
            hasher.update(chunk)
    return hasher.hexdigest()


class DdTool(core.DdTool):
    def configure(self):
        env = super().configure()
        self.set_options("prefetch 1\n")
        return env

    def set_options(self, extra):
        # prefetch 1: each instance takes one part at a time, so the parts spread over them;
        # nodupe_ttl 0: every case moves the same file again.
        (self.dir / "config" / "subscribe" / "bench.conf").write_text(
            f"broker {self.broker_url}\nexchange {self.exchange}\nqueue {self.queue}\n"
            f"expire 1h\ndirectory {self.dst}\nprefetch 1\nnodupe_ttl 0\n{extra}")

    def post_command(self, path, blocksize=BLOCK_WHOLE):
        return super().post_command(path) + ["--blocksize", blocksize]

    def instance_command(self, number):
        return ["dd_subscribe", "foreground", "bench", "--instance", str(number)]

    def complete(self, path, size, daemons, count):
        # dd renames a file into place only once it is complete and verified.
        return path.exists() and path.stat().st_size == size


class Sr3Tool(core.Sr3Tool):
    def configure(self):
        env = super().configure()
        conf = self.dir / "home" / ".config" / "sr3" / "subscribe" / "bench.conf"
        conf.write_text(conf.read_text() + "prefetch 1\n")
        return env

    def post_command(self, path, blocksize=BLOCK_WHOLE):
        return ["sr3_post", "-c", "bench", "--blockSize", str(harness.parse_size(blocksize)), str(path)]

    def instance_command(self, number):
        return ["sr3", "--no", str(number), "foreground", "subscribe/bench"]

    def complete(self, path, size, daemons, count):
        # sr3 writes parts in place under the final name, so full size is not completion:
        # its log says when each of the `count` parts (or the whole file) is downloaded.
        done = sum(d.log.read_text(errors="replace").count(f"downloaded ok: {path}") for d in daemons)
        return done >= count


class Bench(core.Bench):
    def measure_limits(self):
        pass  # bench/core.py measures them

    def setup(self):
        args = self.args
        self.make_vhost("ddbench-parts")
        self.src = self.work / "src"
        self.big = self.src / "big" / "big.bin"
        harness.make_big_file(self.big, args.size)
        self.expected = digest(self.big)
        if not args.skip_rate:
            self.rated = self.src / "rate" / "rate.bin"
            harness.make_big_file(self.rated, args.rate_size)
        os.sync()
        self.start_tools([DdTool] + ([] if args.skip_sr3 else [Sr3Tool]))

    def run_phases(self):
        self.run_cases([("whole", BLOCK_WHOLE, 1)] + [("parts", self.args.block, n) for n in self.args.instances])
        if not self.args.skip_rate:
            self.rate_check()

    def run_cases(self, cases):
        """(mode, blocksize, instances) moves of the big file by each tool, a row each."""
        for mode, blocksize, instances in cases:
            for tool in self.tools:
                if tool.name == "sr3" and instances > 1:
                    # `sr3 --no N foreground` for N > 1 logs nothing to follow it by here.
                    self.rows.append([tool.name, mode, instances, "not measured", "", "", "", ""])
                    continue
                for each in self.tools:
                    each.clear_destination()
                os.sync()
                try:
                    self.rows.append(self.move(tool, mode, blocksize, instances))
                except (PhaseError, OSError) as error:
                    self.notes.append(f"{tool.name}, {mode} x {instances}: {error}")
                    self.rows.append([tool.name, mode, instances, "failed", "", "", "", ""])

    def move(self, tool, mode, blocksize, instances, path=None, size=None, expected=None):
        """Post the file to `instances` idle subscribers; a row of the table."""
        path, size, expected = path or self.big, size or self.args.size, expected or self.expected
        self.broker.purge(tool.queue)
        final = tool.dst / path.relative_to(self.src)
        daemons = [Daemon(tool.instance_command(n), env=tool.env, cwd=tool.dir,
                          log=tool.logs / f"subscribe-{mode}-{instances}-{n}.log")
                   for n in range(1, instances + 1)]
        watch = None
        try:
            deadline = time.monotonic() + self.args.timeout
            while not all(tool.ready(self.broker, d) for d in daemons):
                for d in daemons:
                    d.check()
                if time.monotonic() > deadline:
                    raise PhaseError("the subscribers were not ready within --timeout")
                time.sleep(0.05)
            time.sleep(core.IDLE_SETTLE)
            watch = harness.NoticeWatch(self.vhost, tool.exchange)
            harness.warm(path)
            started = time.monotonic()
            poster = harness.spawn(tool.post_command(path, blocksize), env=tool.env, cwd=tool.dir,
                                log=tool.logs / f"post-{mode}-{instances}.log")
            post_end = None
            count = 1 if blocksize == BLOCK_WHOLE else -(-size // harness.parse_size(blocksize))
            while not tool.complete(final, size, daemons, count):
                if post_end is None and poster.poll() is not None:
                    post_end = time.monotonic()
                    if poster.returncode:
                        log = poster.args and tool.logs / f"post-{mode}-{instances}.log"
                        raise PhaseError(f"post exited with status {poster.returncode}: {harness.last_line(log)}")
                for d in daemons:
                    d.check()
                if time.monotonic() > deadline:
                    raise PhaseError(f"not complete within --timeout {self.args.timeout:g} s")
                time.sleep(0.02)
            done = time.monotonic()
            poster.wait(self.args.timeout)
            post_end = post_end or time.monotonic()
        finally:
            rss = max((d.stop()[1] for d in daemons), default=0)
            if watch:
                watch.close()
        if not final.exists():
            self.notes.append(f"{tool.name}, {mode} x {instances}: no file under its final name after every "
                              f"part was downloaded: {', '.join(sorted(os.listdir(final.parent)))[:200]}")
        elif digest(final) != expected:
            self.notes.append(f"{tool.name}, {mode} x {instances}: the file arrived different from the source")
        mirror = done - watch.first
        return [tool.name, mode if mode == "whole" else f"parts of {harness.size_text(harness.parse_size(blocksize))}",
                instances, f"{post_end - started:.2f}", f"{mirror:.2f}", f"{size / mirror / 1e6:,.0f}",
                f"{rss / 1e6:,.0f}", ""]

    def rate_check(self):
        tool = self.tools[0]
        rate = harness.parse_size(self.args.rate)
        tool.set_options(f"rate_max {self.args.rate}\n")
        try:
            row = self.move(tool, "whole", BLOCK_WHOLE, 1, path=self.rated, size=self.args.rate_size,
                            expected=digest(self.rated))
        except PhaseError as error:
            self.notes.append(f"rate_max: {error}")
            return
        finally:
            tool.set_options("")
        measured = self.args.rate_size / float(row[4])
        row[1] = f"whole, rate_max {self.args.rate}"
        row[7] = f"{measured / rate - 1:+.1%} vs rate_max"
        self.rows.append(row)


HEADERS = ["tool", "mode", "instances", "post s", "mirror s", "MB/s", "peak RSS MB", "note"]
LEGEND = """\
  post s      dd_post / sr3_post from launch to exit (it sums the file, and each part, first)
  mirror s    from the first notice on the exchange to the file complete under its final name
              (dd: renamed into place; sr3, which writes parts in place: its log shows
              every part downloaded); the content is compared with the source after
  MB/s        size / mirror s
  peak RSS    the largest subscriber process's peak resident set
  rate_max    the same as 'whole', one instance with rate_max: measured rate against the limit"""


def report(bench):
    args = bench.args
    print_report(bench, f"segmented transfer: {harness.size_text(args.size)} over loopback, checksum {args.checksum}, "
                        f"sr3 {'skipped' if args.skip_sr3 else core._sr3_version()}", LEGEND)


def print_report(bench, title, legend):
    print(f"\n{title}\nmachine: {os.cpu_count()} CPUs, load average at start {bench.load}, "
          f"at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
    print(format_table(HEADERS, bench.rows))
    print()
    print(legend)
    harness.print_notes(bench.notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=harness.byte_size, default=harness.parse_size("1G"), help="file size (1G)")
    parser.add_argument("--block", default="64M", help="part size (64M)")
    parser.add_argument("--instances", type=harness.positive, nargs="+", default=[1, 2, 4],
                        help="instance counts for the parts (1 2 4)")
    parser.add_argument("--checksum", choices=("sha512", "md5"), default="sha512")
    parser.add_argument("--rate", default="10M", help="rate_max to check (10M)")
    parser.add_argument("--rate-size", type=harness.byte_size, default=200_000_000,
                        help="bytes moved under rate_max (200000000)")
    parser.add_argument("--skip-rate", action="store_true", help="no rate_max check")
    parser.add_argument("--skip-sr3", action="store_true", help="dd only")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per case (180)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    core._check_commands(argparse.Namespace(skip_sr3=args.skip_sr3))
    return harness.run(Bench, args, "ddbench-parts-", report)


if __name__ == "__main__":
    sys.exit(main())
