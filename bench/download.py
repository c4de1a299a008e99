#!/usr/bin/env python3
"""One big download, curl against dd's copy loop (receive, checksum, write) in turn,
in the two states this VM's memory is found in; prints a table.

Run from the repository root, with nginx, curl and dd installed (see bench/README.rst):

    python bench/download.py                    # 1 GiB, 3 pairs in each state
    python bench/download.py --size 256M --pairs 1

Writing a file costs this VM 3-4 times more system time into memory it has given back to
its host than into memory freed a moment before, and which of the two a download meets
changes from one download to the next.  "as found" downloads meet whatever state the
memory is in (each tool's CPU seconds show which); "just freed" ones follow 3 GiB touched
and freed by the bench, so that both tools write into memory freed a moment before.
It measures and reports; it never fails on a missed target.
"""
import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import time

import core
import harness
from harness import format_table

#: dd's copy loop alone, on dd's http transport, timed from the first request to the close.
DD_GET = """\
import hashlib, json, resource, sys, time
from dd.transfer import Transports
from dd.transfer.copy import copy
url, out, method = sys.argv[1:]
cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
started, cpu_before = time.monotonic(), cpu()
with Transports() as transports:
    transport, path = transports.for_url(url)
    with open(out, "wb", buffering=0) as f, transport.open_read(path, 0, None) as source:
        copy(source, f, hasher=hashlib.new(method))
print(json.dumps({"seconds": time.monotonic() - started, "cpu": cpu() - cpu_before}))
"""
FREED = 3 << 30         # memory touched and freed before each download in the "just freed" state
PAUSE = 6.0             # seconds between "as found" downloads: the guest reports what it freed in about 2 s


class Bench(core.Bench):
    def setup(self):
        self.src = self.work / "src"
        self.big_path = self.src / "big.bin"
        harness.make_big_file(self.big_path, self.args.size)
        self.start_tools([])
        self.downloads = 0

    def measure_limits(self):
        seconds, cpu = core.sum_alone(self.big_path, self.args.checksum, timeout=self.args.timeout)
        self.alone = (self.args.size / seconds / 1e6, cpu)

    def run_phases(self):
        for state, prepare in (("as found", self._as_found), ("just freed", self._just_freed)):
            for pair in range(self.args.pairs):
                order = ("curl", "dd") if pair % 2 == 0 else ("dd", "curl")
                results = {}
                for tool in order:
                    prepare()
                    results[tool] = self.curl() if tool == "curl" else self.dd()
                self.rows.append((state, pair + 1, order[0], results["curl"], results["dd"]))

    @staticmethod
    def _as_found():
        time.sleep(PAUSE)

    @staticmethod
    def _just_freed():
        memory = mmap.mmap(-1, FREED)
        for offset in range(0, FREED, mmap.PAGESIZE):
            memory[offset] = 1
        memory.close()

    def _destination(self):
        self.downloads += 1
        return self.work / f"copy-{self.downloads}.bin"   # kept: deleting would free memory

    def curl(self):
        return core.curl_fetch(f"{self.base_url}big.bin", self.big_path, self._destination(),
                               timeout=self.args.timeout)

    def dd(self):
        harness.warm(self.big_path)
        result = subprocess.run([sys.executable, "-c", DD_GET, f"{self.base_url}big.bin", str(self._destination()),
                                 self.args.checksum], check=True, capture_output=True, text=True,
                                timeout=self.args.timeout)
        measured = json.loads(result.stdout)
        return measured["seconds"], measured["cpu"]


HEADERS = ["memory", "pair", "first", "curl MB/s", "curl CPU s", "dd MB/s", "dd CPU s", "dd/curl",
           "dd/min(curl, sum)"]
LEGEND = """\
  memory      as found: a 6 s pause before the download; just freed: 3 GiB touched and freed
              by the bench right before it (memory given back to the host costs writes 3-4 times
              the system time: CPU s shows which a download met)
  first       which tool downloaded first in the pair
  MB/s        10^6 bytes per second, from the first request to the file closed (dd) or from
              launch to exit (curl); CPU s: the process's user+system seconds over that span
  dd/min      dd's speed over the slower of curl's in the same pair and summing the file alone:
              the mirror target of bench/core.py asks for at least 0.85"""


def report(bench):
    args = bench.args
    alone, alone_cpu = bench.alone
    size = args.size / 1e6
    rows, ratios = [], {}
    for state, pair, first, (curl_s, curl_cpu), (dd_s, dd_cpu) in bench.rows:
        curl, dd = size / curl_s, size / dd_s
        against = dd / min(curl, alone)
        ratios.setdefault(state, []).append(against)
        rows.append([state, pair, first, f"{curl:,.0f}", f"{curl_cpu:.2f}", f"{dd:,.0f}", f"{dd_cpu:.2f}",
                     f"{dd / curl:.2f}", f"{against:.2f}"])
    print(f"\none download of {harness.size_text(args.size)} over loopback from nginx, checksum {args.checksum}\n"
          f"machine: {os.cpu_count()} CPUs, load average at start {bench.load}\n")
    print(format_table(HEADERS, rows))
    print(f"\n{args.checksum} of the file alone (a process of its own): {alone:,.0f} MB/s ({alone_cpu:.2f} CPU s)")
    for state, values in ratios.items():
        print(f"median dd/min(curl, sum), memory {state}: {statistics.median(values):.2f}")
    print()
    print(LEGEND)
    harness.print_notes(bench.notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=harness.byte_size, default=harness.parse_size("1G"), help="file size (1G)")
    parser.add_argument("--pairs", type=harness.positive, default=3, help="pairs of downloads per state (3)")
    parser.add_argument("--checksum", choices=("sha512", "sha256", "md5"), default="sha512")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per download (120)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    core.require(["curl", harness.NGINX], "install them: see bench/README.rst")
    return harness.run(Bench, args, "ddbench-download-", report)


if __name__ == "__main__":
    sys.exit(main())
