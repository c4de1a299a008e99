#!/usr/bin/env python3
"""Long-haul links: one big file over a delay line (bench/delayline.py) at 20, 50 and
100 ms round trips, by 1, 2, 4 and 8 streams: N parallel curl range requests, one
dd_subscribe with `parallel N`, and sr3's block transfer with the same block size; then
a download killed at 90 % and continued.  Prints a table, and met/missed per target.

    sudo python bench/longhaul.py            # 256 MiB, 20 50 100 ms, 1 2 4 8 streams, resume 1 GiB
    sudo python bench/longhaul.py --quick    # 128 MiB, 50 ms, 1 and 4 streams, resume 256 MiB

Needs root (namespaces, TUN), what bench/core.py needs (RabbitMQ, nginx, curl, dd; sr3
unless --skip-sr3).  The server (nginx) runs in the line's server namespace, the
subscribers and curl in its client namespace, reaching the broker through a bridge of
127.0.0.1:5672 into it; dd_post runs outside and announces the server's address.  The
namespaces, devices, carrier, nginx, vhost and work directory are removed at the end,
also on failure or Ctrl-C.  It measures and reports; it never fails on a missed target.
"""
import argparse
import os
import signal
import subprocess
import sys
import time

import psutil

import core
import delayline
import harness
import parts
from harness import Daemon, PhaseError, format_table

from dd.delivery import ranges

TARGET_RTT = 50
CEILING_BYTES = 512 << 20
#: sr3's block size: about the middle of dd's pieces (dd.delivery.ranges.plan: 4 to 64 MiB).
SR3_BLOCK = 16 << 20


class DdTool(parts.DdTool):
    prefix = ()

    def instance_command(self, number):
        return [*self.prefix, *super().instance_command(number)]


class Sr3Tool(parts.Sr3Tool):
    prefix = ()

    def instance_command(self, number):
        return [*self.prefix, *super().instance_command(number)]


class Bench(parts.Bench):
    def setup(self):
        args = self.args
        reason = delayline.unavailable()
        if reason:
            raise SystemExit(f"bench: {reason}; not run")
        self.line = delayline.Line()
        self.on_exit(self.line.close)
        self.line.open()
        self.line.carry(0.0)
        self.bridge = delayline.Bridge(self.line.client_ns, harness.BROKER_PORT)
        self.on_exit(self.bridge.close)
        self.buffers = delayline.buffers_text(self.line)
        self.make_vhost("ddbench-longhaul")
        self.src = self.work / "src"
        self.big = self.src / "big" / "big.bin"
        harness.make_big_file(self.big, args.size)
        self.expected = parts.digest(self.big)
        os.sync()
        client = self.line.exec_prefix("client")
        DdTool.prefix = Sr3Tool.prefix = client
        self.start_tools([DdTool] + ([] if args.skip_sr3 else [Sr3Tool]), host=self.line.server,
                         prefix=self.line.exec_prefix("server"), accepts=self.accepts)
        self.ceiling = delayline.ceiling(self.line, CEILING_BYTES)
        self.results = {}   # (rtt ms, tool, streams) -> MB/s
        self.line_cpu = {}  # (rtt ms, tool, streams) -> the carrier's CPU seconds per second of the transfer

    def accepts(self, host, port):
        probe = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)"
        return subprocess.run([*self.line.exec_prefix("client"), sys.executable, "-c", probe, host, str(port)],
                              capture_output=True, timeout=30).returncode == 0

    def curl(self, streams):
        """MB/s of `streams` curl processes fetching a range each of the big file, together."""
        size, url = self.args.size, self.base_url + "big/big.bin"
        out = self.work / "curl"
        out.mkdir(exist_ok=True)
        each = -(-size // streams)
        commands = [[*self.line.exec_prefix("client"), "curl", "-sS", "--fail", "-r",
                     f"{n * each}-{min(size, (n + 1) * each) - 1}", "-o", str(out / f"{time.monotonic_ns()}-{n}"),
                     url] for n in range(streams)]
        started = time.monotonic()
        running = [subprocess.Popen(c) for c in commands]
        if any(p.wait(self.args.timeout) for p in running):
            raise PhaseError("curl failed")
        return size / (time.monotonic() - started) / 1e6

    def carrier_cpu(self):
        """CPU seconds the delay line's carrier has used: on a 2-core machine what it takes
        is not the tools', so the table shows it beside their rates."""
        times = psutil.Process(self.line.carrier.pid).cpu_times()
        return times.user + times.system

    def timed_case(self, rtt, tool, streams, measure, *arguments):
        """Run `measure(*arguments)` (MB/s, or None), keeping its rate and the carrier's CPU
        share meanwhile."""
        cpu = self.carrier_cpu()
        rate = self.results[rtt, tool, streams] = measure(*arguments)
        if rate:
            self.line_cpu[rtt, tool, streams] = (self.carrier_cpu() - cpu) / (self.args.size / 1e6 / rate)

    def run_phases(self):
        args = self.args
        dd_tool = self.tools[0]
        sr3_tool = self.tools[1] if len(self.tools) > 1 else None
        for rtt in args.rtts:
            self.line.carry(rtt / 1000)
            for streams in args.streams:
                self.timed_case(rtt, "curl", streams, self.curl, streams)
                dd_tool.set_options(f"parallel {streams}\n")
                self.timed_case(rtt, "dd", streams, self.measure, dd_tool, parts.BLOCK_WHOLE, streams)
            if sr3_tool:
                self.results[rtt, "sr3", 1] = self.measure(sr3_tool, str(SR3_BLOCK), 1)
        if args.resume_size:
            self.resume()

    def measure(self, tool, blocksize, streams):
        """MB/s of one subscriber instance moving the big file, or None (the reason in the notes)."""
        for each in self.tools:
            each.clear_destination()
            # sr3's completion is read from its log: a log of the same case at another round trip
            # must not count.
            for log in each.logs.glob("subscribe-*.log"):
                log.rename(log.with_name(f"{log.stem}-{time.monotonic_ns()}.done"))
        try:
            row = self.move(tool, "whole" if blocksize == parts.BLOCK_WHOLE else "parts", blocksize, 1)
        except (PhaseError, OSError) as error:
            self.notes.append(f"{tool.name}, {streams} stream(s), rtt {self.line.rtt * 1000:.0f} ms: {error}")
            return None
        return float(row[5].replace(",", ""))

    def resume(self):
        """A big file fetched whole over the line, then again killed at 90 % and continued:
        bytes the server sent (its device's counter) the second time against the first."""
        args, tool = self.args, self.tools[0]
        path = self.src / "resume" / "resume.bin"
        harness.make_big_file(path, args.resume_size)
        os.sync()
        self.line.carry(args.resume_rtt / 1000)
        tool.set_options("parallel 1\n")
        try:
            clean = self.sent(lambda: self.move(tool, "whole", parts.BLOCK_WHOLE, 1, path=path,
                                                size=args.resume_size, expected=parts.digest(path)))
            tool.clear_destination()
            killed = self.sent(lambda: self.killed_at(tool, path, 0.9))
        except (PhaseError, OSError) as error:
            self.notes.append(f"resume: {error}")
            return
        self.resumed = (clean, killed)

    def sent(self, action):
        before = self.tx_bytes()
        action()
        return self.tx_bytes() - before

    def tx_bytes(self):
        """Bytes the server's side of the line has sent (ip netns exec mounts that namespace's /sys)."""
        return int(harness.run_checked([*self.line.exec_prefix("server"), "cat",
                                        f"/sys/class/net/{self.line.devices[1]}/statistics/tx_bytes"],
                                       timeout=30, what="reading the line's byte counter"))

    def killed_at(self, tool, path, fraction):
        """Post `path`, SIGKILL the subscriber once the partial file holds `fraction` of it,
        start another and wait for the file in place."""
        size = self.args.resume_size
        self.broker.purge(tool.queue)
        final = tool.dst / path.relative_to(self.src)
        partial = final.with_name(f".{final.name}.dd.tmp")
        logs = tool.logs
        deadline = time.monotonic() + self.args.timeout
        daemon = self.ready_daemon(tool, logs / "resume-1.log", deadline)
        harness.spawn(tool.post_command(path), env=tool.env, cwd=tool.dir, log=logs / "post-resume.log")
        while not (partial.exists() and partial.stat().st_size >= fraction * size):
            daemon.check()
            if time.monotonic() > deadline:
                raise PhaseError("the download did not reach 90 % within --timeout")
            time.sleep(0.01)
        os.killpg(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait()
        self.killed_size = partial.stat().st_size
        daemon = self.ready_daemon(tool, logs / "resume-2.log", deadline)
        try:
            while not tool.complete(final, size, [daemon], 1):
                daemon.check()
                if time.monotonic() > deadline:
                    raise PhaseError("the resumed download did not complete within --timeout")
                time.sleep(0.05)
        finally:
            daemon.stop()
        if parts.digest(final) != parts.digest(path):
            raise PhaseError("the resumed file differs from the source")
        if not any("resuming after" in log.read_text(errors="replace") for log in (tool.dir / "log").glob("*.log")):
            self.notes.append("resume: the second subscriber did not log 'resuming after'")

    def ready_daemon(self, tool, log, deadline):
        daemon = Daemon(tool.instance_command(1), env=tool.env, cwd=tool.dir, log=log)
        while not tool.ready(self.broker, daemon):
            daemon.check()
            if time.monotonic() > deadline:
                raise PhaseError("the subscriber was not ready within --timeout")
            time.sleep(0.05)
        return daemon


def report(bench):
    args = bench.args
    rows, targets = [], []
    ceiling = f"{bench.ceiling:,.0f}"
    buffers = bench.buffers
    for rtt in args.rtts:
        one, curl_one = bench.results.get((rtt, "dd", 1)), bench.results.get((rtt, "curl", 1))
        for streams in args.streams:
            curl, dd = bench.results.get((rtt, "curl", streams)), bench.results.get((rtt, "dd", streams))
            sr3 = bench.results.get((rtt, "sr3", streams))
            line = "/".join(_cores(bench.line_cpu.get((rtt, tool, streams))) for tool in ("curl", "dd"))
            rows.append([f"{rtt}", streams, _mb(curl), _mb(dd), _ratio(dd, curl), _ratio(dd, one),
                         _ratio(curl, curl_one), _mb(sr3) if streams == 1 and not args.skip_sr3 else "-",
                         ceiling, line])
            if rtt == TARGET_RTT and dd is not None and curl is not None:
                targets.append((f"dd, {streams} stream(s) at {rtt} ms >= 0.85 x {streams} parallel curl(s)",
                                dd / curl, 0.85))
        four, curl_four = bench.results.get((rtt, "dd", 4)), bench.results.get((rtt, "curl", 4))
        if rtt == TARGET_RTT and one and four:
            given = f" (4 curls: {_ratio(curl_four, curl_one)} x one)" if curl_four and curl_one else ""
            targets.append((f"dd, 4 streams at {rtt} ms >= 3 x one stream{given}", four / one, 3.0))
    print(f"\nlong-haul link: {harness.size_text(args.size)} over a userspace delay line (TUN, offload on), "
          f"checksum {args.checksum}, sr3 {'skipped' if args.skip_sr3 else core._sr3_version()}")
    print(f"machine: {os.cpu_count()} CPUs, load average at start {bench.load}, at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.uname().release}")
    print(f"TCP in both namespaces: {buffers} (stock); line ceiling at 0 ms, one TCP stream: {ceiling} MB/s\n")
    print(format_table(["rtt ms", "streams", "curl MB/s", "dd MB/s", "dd/curl", "dd/dd 1", "curl/curl 1", "sr3 MB/s",
                        "ceiling MB/s", "line CPU curl/dd"], rows))
    block = harness.size_text(SR3_BLOCK)
    smallest, largest = (harness.size_text(size) for size in (ranges.PIECE_MIN, ranges.PIECE_MAX))
    print(f"""
  curl      N curl processes in the client namespace, each a byte range of 1/N of the file, together
  dd        one dd_subscribe instance with `parallel N`, the file posted whole: from its notice on the
            exchange to the file verified and renamed into place (pieces of {smallest} to {largest},
            dd.delivery.ranges.plan)
  x/x 1     the same tool with N streams against one stream at that round trip
  sr3       one sr3 subscribe instance, the file posted with blockSize {block}; sr3 --no N with N > 1
            logs nothing bench/parts.py can follow, so only one instance is measured
  ceiling   the delay line itself at 0 ms: one TCP stream between two Python sockets that do
            nothing else, 512 MiB (what the carrier can move)
  line CPU  the carrier's CPU during curl's and dd's transfer, in cores (1.00: one of the
            machine's {os.cpu_count()} busy all along): what the line takes from the tools""")
    resumed = getattr(bench, "resumed", None)
    if resumed:
        clean, killed = resumed
        again = killed / clean - 1
        print(f"\nresume: {harness.size_text(args.resume_size)} at {args.resume_rtt} ms, one stream, subscriber "
              f"killed (SIGKILL) with {bench.killed_size / args.resume_size:.0%} in its partial file: the server "
              f"sent {killed / 1e6:,.0f} MB against {clean / 1e6:,.0f} MB for the same download uninterrupted "
              f"(its TUN device's tx bytes): {again:+.1%} fetched again ({buffers}; ceiling {ceiling} MB/s)")
        targets.append((f"{harness.size_text(args.resume_size)} killed at 90 % re-downloads <= 15 %",
                        again, 0.15, "max"))
    if targets:
        print("\ntargets")
        for name, value, wanted, *kind in targets:
            met = value <= wanted if kind else value >= wanted
            print(f"  {name}: {value:.2f} {'met' if met else 'missed'}")
    harness.print_notes(bench.notes)


def _mb(value):
    return "-" if value is None else f"{value:,.0f}"


def _cores(value):
    return "-" if value is None else f"{value:.2f}"


def _ratio(a, b):
    return "-" if a is None or not b else f"{a / b:.2f}"


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=harness.byte_size, default=None, help="file size (1G; --quick 128M)")
    parser.add_argument("--rtts", type=int, nargs="+", default=None, help="round trips, ms (20 50 100)")
    parser.add_argument("--streams", type=harness.positive, nargs="+", default=None, help="streams (1 2 4 8)")
    parser.add_argument("--resume-size", type=harness.byte_size, default=None,
                        help="file killed at 90 %% and resumed (1G; --quick 256M; 0: skip)")
    parser.add_argument("--resume-rtt", type=int, default=TARGET_RTT, help="its round trip, ms (50)")
    parser.add_argument("--quick", action="store_true", help="128 MiB, 50 ms, 1 and 4 streams, resume 256 MiB")
    parser.add_argument("--checksum", choices=("sha512", "md5"), default="sha512")
    parser.add_argument("--skip-sr3", action="store_true", help="dd and curl only")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per case (300)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    quick = args.quick
    # 1 GiB: TCP's slow start (about half a second at 50 ms) is a third of a 256 MiB transfer
    # over four streams, and would be what the table compares instead of the streams.
    args.size = args.size or harness.parse_size("128M" if quick else "1G")
    args.rtts = args.rtts or ([TARGET_RTT] if quick else [20, 50, 100])
    args.streams = args.streams or ([1, 4] if quick else [1, 2, 4, 8])
    if args.resume_size is None:
        args.resume_size = harness.parse_size("256M" if quick else "1G")
    return args


def main(argv=None):
    args = parse_args(argv)
    reason = delayline.unavailable()
    if reason:
        print(f"bench: {reason}; not run", file=sys.stderr)
        return delayline.UNAVAILABLE
    core._check_commands(argparse.Namespace(skip_sr3=args.skip_sr3))
    return harness.run(Bench, args, "ddbench-longhaul-", report)


if __name__ == "__main__":
    sys.exit(main())
