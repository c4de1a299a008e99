#!/usr/bin/env python3
"""dd on a three-node RabbitMQ cluster against one node, classic and quorum queues, in one
run; then the time from the death of a subscriber's node to its first delivery after it.

Starts its own RabbitMQ nodes (tests/support/cluster.py: beside the machine's broker, never
touching it) and its own nginx; mirrors small files and one big file through each broker and
queue type; prints a table and the targets, met or missed.  Run from the repository root:

    python bench/cluster.py                                # 1,000 x 1 KiB and 1 GiB, ~5 min
    python bench/cluster.py --small-count 300 --big-size 64M --failover-count 500  # quick look

It measures and reports; it never fails on a missed target.  See bench/README.rst.
"""
import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

from harness import (Daemon, Mirror, PhaseError, byte_size, dd_environment, format_table, make_big_file,
                     make_small_tree, positive, print_notes, run, run_checked, spawn, start_nginx, stop_group,
                     wait_mirror)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.cluster import Cluster, available  # noqa: E402 - the repository's, after the path

#: Targets: quorum queues' small-file rate against classic ones' on the cluster, and the
#: seconds from a node's death to the next delivery through another node.
QUORUM_VS_CLASSIC = 0.7
FAILOVER_SECONDS = 10.0
PREFETCH = 10
#: What a subscriber may still deliver after its node died without a new delivery.
SLACK = PREFETCH + PREFETCH // 2
DEADLINE = 600.0


class Bench:
    def __init__(self, args, work):
        self.args = args
        self.work = work
        self.rows = []
        self.notes = []
        self.failover = None        # seconds, once measured
        self.load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        self._exits = contextlib.ExitStack()

    def on_exit(self, function, *arguments, **keywords):
        self._exits.callback(function, *arguments, **keywords)

    def cleanup(self):
        """Undo the set-up, last first; every step runs whatever an earlier one raised."""
        try:
            self._exits.close()
        except (Exception, SystemExit) as error:  # noqa: BLE001 - reported, the run ends anyway
            print(f"bench: cleanup: {error}", file=sys.stderr)

    def setup(self):
        reason = available()
        if reason:
            raise SystemExit(f"bench: {reason}")
        self.src = self.work / "src"
        self.small = make_small_tree(self.src / "small", self.args.small_count)
        self.big_path = self.src / "big" / "big.bin"
        make_big_file(self.big_path, self.args.big_size)
        self.failover_files = make_small_tree(self.src / "failover", self.args.failover_count)
        os.sync()
        nginx_process, self.base_url = start_nginx(self.work / "nginx", self.src)
        self.on_exit(stop_group, nginx_process)
        self.brokers = {}
        for name, size in (("1 node", 1), ("3 nodes", 3)):
            print(f"bench: starting RabbitMQ, {name}", file=sys.stderr)
            cluster = Cluster(Path(tempfile.mkdtemp(prefix="cluster-", dir=self.work)), size=size, management=False)
            self.on_exit(cluster.stop)
            self.brokers[name] = cluster.start_all()

    def measure_limits(self):
        pass

    def env(self, name):
        return dd_environment(self.work / name, PYTHONPATH=str(ROOT))

    def dd(self, env, component, *args, timeout=300):
        return run_checked([sys.executable, "-m", "dd.cli.main", component, *map(str, args)], env=env,
                           cwd=self.work, timeout=timeout, what=f"dd_{component} {args[0]}")

    def subscriber(self, name, cluster, queue_type, extra=""):
        """A declared subscriber configuration on `cluster`: (env, exchange, destination)."""
        env = self.env(name)
        exchange = f"x{name}"
        config = self.work / name / "config" / "subscribe" / "bench.conf"
        config.parent.mkdir(parents=True)
        config.write_text(f"broker {cluster.urls()}\nexchange {exchange}\nqueue_type {queue_type}\n"
                          f"expire 1h\nlog_level warning\nlog_reports off\n{extra}"
                          f"directory {self.work / name / 'dst'}\n")
        self.dd(env, "subscribe", "declare", "bench")
        return env, exchange, self.work / name / "dst"

    def post(self, env, cluster, exchange, path, log):
        return spawn([sys.executable, "-m", "dd.cli.main", "post", "--post_broker", cluster.urls(),
                      "--post_exchange", exchange, "--post_base_url", self.base_url,
                      "--post_base_dir", str(self.src), str(path)], env=env, cwd=self.work, log=log)

    def run_phases(self):
        for broker, cluster in self.brokers.items():
            for queue_type in ("classic", "quorum"):
                try:
                    self.rows.append(self.throughput(broker, cluster, queue_type))
                except PhaseError as error:
                    self.notes.append(f"{broker}, {queue_type}: {error}")
                    self.rows.append([broker, queue_type, "failed", "failed"])
        try:
            self.failover = self.kill_a_node(self.brokers["3 nodes"])
        except PhaseError as error:
            self.notes.append(f"failover: {error}")

    def throughput(self, broker, cluster, queue_type):
        """Small files from a full queue (files/s, first file to last), then the big file
        posted to the idle subscriber (MB/s, post to complete)."""
        name = f"{broker.replace(' ', '')}_{queue_type}"
        env, exchange, dst = self.subscriber(name, cluster, queue_type)
        logs = self.work / name
        poster = self.post(env, cluster, exchange, self.src / "small", logs / "post-small.log")
        if poster.wait(DEADLINE):
            raise PhaseError(f"dd_post exited with status {poster.returncode}")
        daemon = Daemon([sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "bench"], env=env,
                        cwd=self.work, log=logs / "subscribe.log")
        try:
            small = wait_mirror(Mirror(dst, self.small), time.monotonic(), time.monotonic() + DEADLINE, daemon)
            if small.all is None:
                raise PhaseError(f"{len(self.small)} small files not mirrored within {DEADLINE:g} s")
            started = time.monotonic()
            poster = self.post(env, cluster, exchange, self.big_path, logs / "post-big.log")
            big = wait_mirror(Mirror(dst, {"big/big.bin": self.args.big_size}), started, started + DEADLINE,
                              daemon, poster, logs / "post-big.log")
            if big.all is None:
                raise PhaseError(f"the big file not mirrored within {DEADLINE:g} s")
        finally:
            daemon.stop()
        span = small.all - small.first
        rate = len(self.small) / span if span > 0 else float("inf")
        return [broker, queue_type, f"{rate:,.0f}", f"{self.args.big_size / (big.all - started) / 1e6:,.0f}"]

    def kill_a_node(self, cluster):
        """SIGKILL the node a subscriber of a quorum queue is on, mid-flow; seconds to the first
        delivery through another (more than SLACK files after the kill)."""
        env, exchange, dst = self.subscriber("failover", cluster, "quorum", extra=f"prefetch {PREFETCH}\n")
        logs = self.work / "failover"
        poster = self.post(env, cluster, exchange, self.src / "failover", logs / "post.log")
        if poster.wait(DEADLINE):
            raise PhaseError(f"dd_post exited with status {poster.returncode}")
        daemon = Daemon([sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "bench"], env=env,
                        cwd=self.work, log=logs / "subscribe.log")
        mirror = Mirror(dst, self.failover_files)
        first = cluster.nodes[0]
        try:
            deadline = time.monotonic() + DEADLINE
            while mirror.poll() < len(self.failover_files) // 4:
                daemon.check()
                if time.monotonic() > deadline:
                    raise PhaseError("the subscriber did not start")
                time.sleep(0.01)
            at_kill = mirror.done
            killed = time.monotonic()
            cluster.kill(first)
            while mirror.poll() <= min(at_kill + SLACK, len(self.failover_files) - 1):
                daemon.check()
                if time.monotonic() > killed + DEADLINE:
                    raise PhaseError("nothing delivered after the node's death")
                time.sleep(0.005)
            seconds = time.monotonic() - killed
            rest = wait_mirror(mirror, killed, killed + DEADLINE, daemon)
            if rest.all is None:
                raise PhaseError(f"{len(self.failover_files) - mirror.done} files lost after the node's death")
        finally:
            daemon.stop()
            cluster.restart(first)
        return seconds


def report(bench):
    args = bench.args
    print(f"dd on RabbitMQ: {args.small_count:,} files of 1 KiB (files/s, first file to last) and one "
          f"{args.big_size / (1 << 20):,.0f} MiB file (MB/s, post to complete); load average {bench.load}")
    print(format_table(["broker", "queue", "small files/s", "big MB/s"], bench.rows))
    print()
    rates = {(row[0], row[1]): row[2] for row in bench.rows}
    targets = []
    try:
        ratio = (float(rates[("3 nodes", "quorum")].replace(",", ""))
                 / float(rates[("3 nodes", "classic")].replace(",", "")))
        targets.append(["quorum vs classic, small files, 3 nodes", f">= {QUORUM_VS_CLASSIC:g}x", f"{ratio:.2f}x",
                        "met" if ratio >= QUORUM_VS_CLASSIC else "missed"])
    except (KeyError, ValueError):
        targets.append(["quorum vs classic, small files, 3 nodes", f">= {QUORUM_VS_CLASSIC:g}x", "-", "missed"])
    if bench.failover is None:
        targets.append(["node death to next delivery (quorum)", f"<= {FAILOVER_SECONDS:g} s", "-", "missed"])
    else:
        targets.append(["node death to next delivery (quorum)", f"<= {FAILOVER_SECONDS:g} s",
                        f"{bench.failover:.2f} s", "met" if bench.failover <= FAILOVER_SECONDS else "missed"])
    print(format_table(["target", "wanted", "measured", ""], targets))
    print_notes(bench.notes)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-count", type=positive, default=1000, help="small files (default 1000)")
    parser.add_argument("--big-size", type=byte_size, default=1 << 30, help="size of the big file (default 1G)")
    parser.add_argument("--failover-count", type=positive, default=1000,
                        help="files mirrored through a node's death (default 1000)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and logs")
    return run(Bench, parser.parse_args(), "ddbench-cluster-", report)


if __name__ == "__main__":
    sys.exit(main())
