#!/usr/bin/env python3
"""dd_sara, a pump's relay, on this machine, in one run: prints a table.

  small   2,000 files of 1 KiB announced on a source's exchange, then one dd_sara instance
          started on that full queue: launch to its last notice re-announced (each file
          downloaded, verified, stored in the pump's tree, announced from its data server);
          against curl fetching the same files over keep-alive (1 process), in the same run;
          then the same files by a second relay whose duplicate store is a Redis (nodupe_store,
          the bench's own), against the first, whose store is SQLite
  big     one 1 GiB file: its notice to the relay's notice of its copy; against curl fetching
          it just before and just after (their mean), and sha512 of the file alone
  chain   three relays A → B → C, each reading the one before from its data server, and a
          subscriber on C: a file of 1 KiB posted on A, to the file complete at the subscriber,
          with the moment its notice left each relay; the median and the worst of the files

Run from the repository root (dd installed; RabbitMQ on 127.0.0.1:5672 with guest/guest and
rabbitmqctl; nginx-light; curl):

    python bench/relay.py                               # 2,000 x 1 KiB, 1 GiB, 20 files down the chain
    python bench/relay.py --small-count 200 --big-size 64M --chain-count 5   # quick look

It measures and reports; it never fails on a missed target.  See bench/README.rst.
"""
import argparse
import os
import statistics
import sys
import time

import amqp

import harness
from dd.core import formats
from harness import (BROKER_HOST, Daemon, Mirror, NGINX, PhaseError, SMALL_SIZE, byte_size,
                     format_table, make_big_file, make_small_tree, parse_size, positive, print_notes, run,
                     run_checked, size_text, spawn, start_nginx, stop_group, timed_run, wait_mirror, warm)
from core import curl_fetch, require, sum_alone

RELAYS = "ABC"


class Sightings(harness.ExchangeWatch):
    """When each notice was first seen on each of some exchanges: {(exchange, rel_path): time}."""

    def __init__(self, vhost, exchanges):
        self.seen = {}
        super().__init__(vhost, exchanges)

    def _on_message(self, message):
        notice = formats.decode(message.body, message.properties.get("application_headers"))
        name = notice.rel_path.rsplit("/", 1)[-1]
        self.seen.setdefault((message.delivery_info["exchange"], name), time.monotonic())

    def count(self, exchange):
        return sum(1 for (where, _) in self.seen if where == exchange)

    def when(self, exchange, name):
        return self.seen.get((exchange, name))


class Relay(harness.Bench):
    def __init__(self, args, work):
        super().__init__(args, work)
        self.rows = []          # [phase, what, time s, rate, unit]
        self.limits = {}
        self.targets = []
        self.relays = {}        # name -> Daemon
        self.small_rate = None  # files/s of the relay with the SQLite store

    def setup(self):
        self.make_vhost("ddrelay")
        channel = self.broker.channel
        for exchange in ("xsrc", "xR", *(f"x{r}" for r in RELAYS)):
            channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.src = self.work / "src"
        self.small = make_small_tree(self.src / "small", self.args.small_count)
        self.big = self.src / "big" / "big.bin"
        if self.args.big_size:
            make_big_file(self.big, self.args.big_size)
        for k in range(self.args.chain_count):
            (self.src / "chain").mkdir(parents=True, exist_ok=True)
            (self.src / "chain" / f"c{k:03d}.dat").write_bytes(bytes(SMALL_SIZE))
        nginx, self.base_url = start_nginx(self.work / "nginx", self.src)
        self.on_exit(stop_group, nginx)
        self.env = harness.dd_environment(self.work)
        self.broker_url = f"amqp://guest:guest@{BROKER_HOST}/{self.vhost}"
        (self.work / "log").mkdir()
        # The data servers' workers (www-data) search their way to the relays' trees.
        for directory in (self.work, self.work.parent):
            directory.chmod(directory.stat().st_mode | 0o001)
        self.sightings = Sightings(self.vhost, ["xsrc", "xR", *(f"x{r}" for r in RELAYS)])
        self.on_exit(self.sightings.close)
        self.configure("A", "xsrc")
        _, redis_port = harness.start_redis(self.work / "redis")
        # Declared now, so that its queue holds the small files' notices for its own phase.
        self.configure("R", "xsrc", f"nodupe_store redis://127.0.0.1:{redis_port}/0\n")

    def configure(self, name, exchange, extra=""):
        """A relay reading `exchange`, storing in its own tree, serving it, posting to x<name>."""
        port = harness.free_port()
        config = self.work / "config" / "sara" / f"{name}.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"broker {self.broker_url}\nexchange {exchange}\nqueue q_guest.relay.{name}\nexpire 1h\n"
                          f"post_broker {self.broker_url}\npost_exchange x{name}\n"
                          f"post_base_url http://127.0.0.1:{port}/\ndata_server_port {port}\n"
                          f"directory {self.work / 'pump' / name}\n{extra}")
        run_checked(["dd_sara", "declare", name], env=self.env, timeout=60, what=f"dd_sara declare {name}")
        self.on_exit(run_checked, ["dd_sara", "stop", name], env=self.env, timeout=60, what=f"dd_sara stop {name}")

    def start(self, component, name):
        daemon = Daemon([f"dd_{component}", "foreground", name], env=self.env, cwd=self.work,
                        log=self.work / "log" / f"{component}-{name}.log")
        self.on_exit(daemon.stop)
        return daemon

    def wait_ready(self, daemon, queue):
        deadline = time.monotonic() + 30
        while self.broker.depth(queue)[1] == 0:
            daemon.check()
            if time.monotonic() > deadline:
                raise PhaseError(f"nothing consumed {queue} within 30 s")
            time.sleep(0.05)

    def post(self, path, wait=True):
        """dd_post of `path`, waited for unless `wait` is False: the process then."""
        log = self.work / "log" / "post.log"
        process = spawn(["dd_post", "--post_broker", self.broker_url, "--post_exchange", "xsrc",
                         "--post_base_url", self.base_url, "--post_base_dir", str(self.src), str(path)],
                        env=self.env, cwd=self.work, log=log)
        if wait and process.wait(self.args.timeout):
            raise PhaseError(f"dd_post {path} exited with status {process.returncode}: {harness.last_line(log)}")
        return process

    def wait_count(self, exchange, count, daemon):
        deadline = time.monotonic() + self.args.timeout
        while self.sightings.count(exchange) < count:
            daemon.check()
            if time.monotonic() > deadline:
                raise PhaseError(f"{self.sightings.count(exchange)} of {count} notices on {exchange} "
                                 f"within --timeout {self.args.timeout:g} s")
            time.sleep(0.01)
        return time.monotonic()

    def measure_limits(self):
        count = self.args.small_count
        config = self.work / "curl.conf"
        config.write_text("".join(f'url = "{self.base_url}{rel}"\noutput = "{self.work / "curl" / rel}"\n'
                                  for rel in self.small))
        warm(self.src / "small")
        seconds, cpu = timed_run(["curl", "-sS", "--fail", "--create-dirs", "-K", str(config)],
                                 timeout=self.args.timeout)
        self.curl_small = count / seconds
        self.limits[f"curl, {count} x 1 KiB, keep-alive (1 process)"] = (f"{self.curl_small:,.0f}",
                                                                          f"files/s  ({cpu:.2f} CPU s)")

    def run_phases(self):
        for phase in (self.phase_small, self.phase_small_redis, self.phase_big, self.phase_chain):
            try:
                phase()
            except (PhaseError, OSError, amqp.exceptions.AMQPError) as error:
                self.notes.append(f"{phase.__name__}: {error}")

    def phase_small(self):
        count = self.args.small_count
        warm(self.src / "small")
        self.post(self.src / "small")
        self.small_rate = rate = self.relay_small("A", "SQLite")
        self.target(f"relay {count} small files, one instance", ">= 1,000 files/s", f"{rate:,.0f} files/s",
                    rate >= 1000)
        self.target("  the same against curl", "(curl's rate, for scale)", f"{rate / self.curl_small:.2f} x curl",
                    None)

    def phase_small_redis(self):
        if self.small_rate is None:
            raise PhaseError("no rate with the SQLite store to compare with")
        rate = self.relay_small("R", "Redis")
        self.relays.pop("R").stop()
        # The store's own target is bench/nodupe.py's; this is what it costs a relay.
        self.target("  the same, duplicate store in Redis", "(against SQLite's, for scale)",
                    f"{rate:,.0f} files/s ({rate / self.small_rate:.2f} x)", None)

    def relay_small(self, name, store):
        """Files/s of relay `name` on its queue full of the small files' notices, first out to last."""
        count, queue, exchange = self.args.small_count, f"q_guest.relay.{name}", f"x{name}"
        warm(self.src / "small")
        deadline = time.monotonic() + 10
        while self.broker.depth(queue)[0] < count and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        self.relays[name] = relay = self.start("sara", name)
        ended = self.wait_count(exchange, count, relay)
        first = min(when for (where, _), when in self.sightings.seen.items() if where == exchange)
        self.rows.append(["small", f"one dd_sara ({store} duplicate store), {count} x 1 KiB queued: "
                          "launch to last notice out", f"{ended - started:.2f}", f"{count / (ended - started):,.0f}",
                          "files/s"])
        # Its start-up (connections, its data server) is the row above's; the rate is the relay's.
        rate = (count - 1) / (ended - first)
        self.rows.append(["small", "  first notice out to last", f"{ended - first:.2f}", f"{rate:,.0f}", "files/s"])
        return rate

    def phase_big(self):
        if not self.args.big_size:
            return
        relay = self.relays.get("A") or self.start("sara", "A")
        self.relays["A"] = relay
        self.wait_ready(relay, "q_guest.relay.A")
        url = f"{self.base_url}big/big.bin"
        curls = []
        for when in ("warm-up", "before", "after"):
            if when == "after":
                self.post(self.big)
                deadline = time.monotonic() + self.args.timeout
                while (ended := self.sightings.when("xA", "big.bin")) is None:
                    relay.check()
                    if time.monotonic() > deadline:
                        raise PhaseError(f"the big file was not relayed within --timeout {self.args.timeout:g} s")
                    time.sleep(0.01)
                began = self.sightings.when("xsrc", "big.bin")
                speed = self.args.big_size / (ended - began) / 1e6
            seconds, _ = curl_fetch(url, self.big, self.work / f"curl-{when}.bin", timeout=self.args.timeout)
            if when != "warm-up":
                curls.append(self.args.big_size / seconds / 1e6)
            self.limits[f"curl, 1 x {size_text(self.args.big_size)}, {when}"] = (
                f"{self.args.big_size / seconds / 1e6:,.0f}", "MB/s")
        seconds, _ = sum_alone(self.big, "sha512", timeout=self.args.timeout)
        self.limits[f"sha512 of the {size_text(self.args.big_size)} file alone"] = (
            f"{self.args.big_size / seconds / 1e6:,.0f}", "MB/s")
        curl = statistics.fmean(curls)
        self.rows.append(["big", f"dd_sara, 1 x {size_text(self.args.big_size)}: notice in to notice out",
                          f"{self.args.big_size / speed / 1e6:.2f}", f"{speed:,.0f}", "MB/s"])
        self.target(f"relay 1 x {size_text(self.args.big_size)}", f">= 0.85 x curl around = {0.85 * curl:,.0f} MB/s",
                    f"{speed:,.0f} MB/s ({speed / curl:.2f} x)", speed >= 0.85 * curl)
        for leftover in (self.work / "pump" / "A").rglob("big.bin"):
            leftover.unlink()
        for leftover in self.work.glob("curl-*.bin"):
            leftover.unlink()

    def phase_chain(self):
        count = self.args.chain_count
        for name, upstream in (("B", "xA"), ("C", "xB")):
            self.configure(name, upstream)
        mirror_dir = self.work / "mirror"
        config = self.work / "config" / "subscribe" / "end.conf"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"broker {self.broker_url}\nexchange xC\nqueue q_guest.relay.end\nexpire 1h\n"
                          f"directory {mirror_dir}\n")
        run_checked(["dd_subscribe", "declare", "end"], env=self.env, timeout=60, what="dd_subscribe declare")
        daemons = [self.relays.get("A") or self.start("sara", "A"), self.start("sara", "B"), self.start("sara", "C"),
                   self.start("subscribe", "end")]
        for daemon, queue in zip(daemons, ("A", "B", "C", "end")):
            self.wait_ready(daemon, f"q_guest.relay.{queue}")
        hops = {name: [] for name in ("dd_post launch -> notice on A's source exchange", "-> out of relay A",
                                      "-> out of relay B", "-> out of relay C", "-> file at the subscriber")}
        totals, pumps = [], []      # from dd_post's launch; from the notice on A's source exchange
        for k in range(count):
            name = f"c{k:03d}.dat"
            started = time.monotonic()
            # Not waited for: the file can reach the end of the chain before dd_post has exited.
            poster = self.post(self.src / "chain" / name, wait=False)
            mirror = Mirror(mirror_dir, {f"guest/chain/{name}": SMALL_SIZE})
            arrival = wait_mirror(mirror, started, started + 60, daemons[-1], poster, self.work / "log" / "post.log")
            if arrival.all is None:
                raise PhaseError(f"{name} did not reach the subscriber on C within 60 s")
            times = [started, *(self.sightings.when(x, name) for x in ("xsrc", "xA", "xB", "xC")), arrival.all]
            if None in times:
                raise PhaseError(f"{name}: a notice was not seen on every exchange")
            for series, before, after in zip(hops.values(), times, times[1:]):
                series.append(after - before)
            totals.append(arrival.all - started)
            pumps.append(arrival.all - times[1])
            time.sleep(0.2)     # one file at a time: each finds the chain idle
        for label, series in hops.items():
            self.rows.append(["chain", label, f"{statistics.median(series) * 1000:,.0f} / {max(series) * 1000:,.0f}",
                              "", "ms (median / worst)"])
        for label, series in ((f"post on A -> file at C's subscriber ({count} files)", totals),
                              ("notice on A -> file at C's subscriber", pumps)):
            self.rows.append(["chain", label, f"{statistics.median(series) * 1000:,.0f} / {max(series) * 1000:,.0f}",
                              "", "ms (median / worst)"])

    def target(self, name, wanted, measured, met):
        self.targets.append([name, wanted, measured, "" if met is None else ("met" if met else "MISSED")])


def report(bench):
    args = bench.args
    print(f"\ndd_sara relaying: {args.small_count} x 1 KiB, 1 x {size_text(args.big_size) if args.big_size else '-'}, "
          f"{args.chain_count} files down a chain of three; machine: {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print(format_table(["phase", "what", "time s", "rate", "unit"], bench.rows))
    print()
    print(format_table(["machine limit (same run)", "value", "unit"],
                       [[name, value, unit] for name, (value, unit) in bench.limits.items()]))
    print()
    print(format_table(["target", "wanted", "dd", ""], bench.targets))
    print_notes(bench.notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=positive, default=2000, help="small files relayed (2000)")
    parser.add_argument("--big-size", type=byte_size, default=parse_size("1G"),
                        help="size of the big file, e.g. 64M (1G); 0 skips it")
    parser.add_argument("--chain-count", type=positive, default=20, help="files sent down the chain (20)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds each phase may take (300)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    require(["rabbitmqctl", "curl", NGINX, "redis-server", "dd_post", "dd_sara", "dd_subscribe"], "install them")
    return run(Relay, args, "ddrelay-", report)


if __name__ == "__main__":
    sys.exit(main())
