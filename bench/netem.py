#!/usr/bin/env python3
"""Parallel streams on a long-haul link: the data server in its own network
namespace behind a veth pair with `tc netem` delay, and 1, 2, 4 and 8 dd_subscribe
instances moving one file in parts; prints a table.

Needs root, iproute2 (`ip`, `tc`: apt-get install iproute2), nginx-light,
RabbitMQ on 127.0.0.1:5672 (guest/guest) and dd installed.  Run from the
repository root:

    sudo python bench/netem.py                         # 512 MiB in 64 MiB parts, 50 ms
    sudo python bench/netem.py --size 128M --instances 1 4

What it creates, and removes when it ends, also on failure or Ctrl-C: a
namespace ``ddnetem<pid>``, a veth pair whose outer end ``ddv<pid>`` has the
private address 10.200.<n>.1/30 on this machine and whose inner end, in the
namespace, has 10.200.<n>.2/30 and the netem delay (so every packet from the
server is late: a round trip of --delay), and an nginx inside the namespace.
Where the kernel lacks netem, ``--delay 0 --stream-rate 25m`` caps each
connection with nginx's limit_rate instead, as a long round trip caps each
TCP stream's window.
No other interface, route or setting of the machine is touched.  Without
network namespaces (not root, or a container that forbids them) or netem (a
kernel without sch_netem) it says so and exits with status 77.
"""
import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse

import core
import harness
import parts

UNAVAILABLE = 77


def run(*args, namespace=None):
    command = (["ip", "netns", "exec", namespace] if namespace else []) + list(args)
    return harness.run_checked(command, timeout=30, what=" ".join(command))


class Link:
    """The namespace, the veth pair and the delay; `close` undoes all of it."""

    def __init__(self):
        pid = os.getpid()
        subnet = pid % 250
        self.namespace, self.outer, self.inner = f"ddnetem{pid}", f"ddv{pid}", f"ddi{pid}"
        self.client, self.server = f"10.200.{subnet}.1", f"10.200.{subnet}.2"
        self.made = False

    def open(self, delay):
        self.made = True
        run("ip", "netns", "add", self.namespace)
        run("ip", "link", "add", self.outer, "type", "veth", "peer", "name", self.inner,
           "netns", self.namespace)
        run("ip", "addr", "add", f"{self.client}/30", "dev", self.outer)
        run("ip", "link", "set", self.outer, "up")
        run("ip", "addr", "add", f"{self.server}/30", "dev", self.inner, namespace=self.namespace)
        run("ip", "link", "set", self.inner, "up", namespace=self.namespace)
        run("ip", "link", "set", "lo", "up", namespace=self.namespace)
        if delay == "0":
            return
        # A queue long enough for a bandwidth-delay product: netem's default 1000 packets
        # would cap every stream together at about 30 MB/s.
        run("tc", "qdisc", "add", "dev", self.inner, "root", "netem", "delay", delay, "limit", "100000",
           namespace=self.namespace)

    def close(self):
        if self.made:
            # Deleting the namespace deletes the inner end, and with it the pair.
            subprocess.run(["ip", "link", "del", self.outer], capture_output=True, timeout=30)
            subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True, timeout=30)
            self.made = False


def namespaces_available(delay):
    if os.geteuid() != 0:
        return "network namespaces need root"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "ip and tc are missing (apt-get install iproute2)"
    probe = f"ddnetemprobe{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=30)
    if result.returncode:
        return f"cannot make a network namespace: {result.stderr.strip()}"
    try:
        if delay == "0":
            return None
        # On the probe namespace's own loopback: the kernel may lack sch_netem.
        result = subprocess.run(["ip", "netns", "exec", probe, "tc", "qdisc", "add", "dev", "lo", "root",
                                 "netem", "delay", "1ms"], capture_output=True, text=True, timeout=30)
        if result.returncode:
            return (f"this kernel has no netem qdisc ({result.stderr.strip()}; "
                    f"load it with modprobe sch_netem where modules are available)")
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=30)
    return None


class Bench(parts.Bench):
    def setup(self):
        args = self.args
        args.skip_sr3, args.skip_rate = True, True
        self.link = Link()
        self.on_exit(self.link.close)
        self.link.open(args.delay)
        self.make_vhost("ddbench-netem")
        self.src = self.work / "src"
        self.big = self.src / "big" / "big.bin"
        harness.make_big_file(self.big, args.size)
        self.expected = parts.digest(self.big)
        os.sync()
        self.start_tools([parts.DdTool], host=self.link.server,
                         prefix=["ip", "netns", "exec", self.link.namespace],
                         directives=f"limit_rate {args.stream_rate};" if args.stream_rate else "")
        self.rtt = self.ping()

    def ping(self):
        url = urllib.parse.urlsplit(self.base_url)
        started = time.monotonic()
        socket.create_connection((url.hostname, url.port), timeout=5).close()
        return time.monotonic() - started

    def run_phases(self):
        self.run_cases([("parts", self.args.block, n) for n in self.args.instances])
        single = next((float(r[4]) for r in self.rows if r[2] == 1 and r[3] != "failed"), None)
        for row in self.rows:
            if single and row[3] != "failed":
                row[7] = f"{single / float(row[4]):.2f} x one instance"


def report(bench):
    args = bench.args
    parts.print_report(
        bench, f"parallel streams: {harness.size_text(args.size)} in parts of {args.block}, netem delay {args.delay}, "
               f"per-stream limit {args.stream_rate or 'none'} (TCP connect measured {bench.rtt * 1000:.0f} ms), "
               f"checksum {args.checksum}",
        "  mirror s: from the first notice on the exchange to the file renamed into place\n"
        "  note: speed-up over one instance")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=harness.byte_size, default=harness.parse_size("512M"), help="file size (512M)")
    parser.add_argument("--block", default="64M", help="part size (64M)")
    parser.add_argument("--delay", default="50ms",
                        help="netem delay (50ms); 0 runs without netem, to check the set-up")
    parser.add_argument("--stream-rate", metavar="RATE",
                        help="nginx limit_rate per connection, e.g. 25m: each stream capped as a long "
                             "round trip caps a TCP window; with --delay 0 where netem is missing")
    parser.add_argument("--instances", type=harness.positive, nargs="+", default=[1, 2, 4, 8],
                        help="instance counts (1 2 4 8)")
    parser.add_argument("--checksum", choices=("sha512", "md5"), default="sha512")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case (300)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    reason = namespaces_available(args.delay)
    if reason:
        print(f"bench: {reason}; not run", file=sys.stderr)
        return UNAVAILABLE
    core._check_commands(argparse.Namespace(skip_sr3=True))
    return harness.run(Bench, args, "ddbench-netem-", report)


if __name__ == "__main__":
    sys.exit(main())
