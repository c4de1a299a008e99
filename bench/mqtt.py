"""dd over MQTT (a Mosquitto of the bench's own) against dd over AMQP (RabbitMQ), in one run:
posting and mirroring 2,000 files of 1 KiB and one 1 GiB file, the phases of bench/core.py,
each protocol in turn.  Target: dd over MQTT at least 0.8 x dd over AMQP on small files
(posting, and mirroring from a full queue).  It reports and never fails on a missed target.

Needs what bench/core.py needs, and mosquitto and paho-mqtt (pip install -e .[mqtt]).

    python bench/mqtt.py                                   # defaults
    python bench/mqtt.py --small-count 200 --big-size 64M  # quick look
"""
import argparse
import sys
import threading
import time

import core
import harness
from harness import format_table

#: dd over MQTT must reach this fraction of dd over AMQP on small files.
TARGET = 0.8
#: (row phase, what it measures, files per second is better)
COMPARED = [("1 post small", "post small files", True), ("2 launch -> all files", "mirror, full queue", True),
            ("3 post start -> all files", "idle start: all files", True),
            ("3 first notice -> first file", "idle start: first file", False),
            ("4 post big", "post big file", False), ("4 first notice -> mirrored", "mirror big file", False)]


class MqttNoticeWatch(threading.Thread):
    """Notes when notices reach an exchange's topics, through a subscription of its own."""

    def __init__(self, port, exchange):
        import paho.mqtt.client as paho
        super().__init__(daemon=True)
        self.first = None
        self._client = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self._client.on_message = self._on_message
        subscribed = threading.Event()
        self._client.on_subscribe = lambda *_: subscribed.set()
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"{exchange}/#", 0)
        self._client.loop_start()
        subscribed.wait(5)

    def _on_message(self, client, userdata, message):
        self.first = self.first or time.monotonic()

    def close(self):
        self._client.disconnect()
        self._client.loop_stop()


class MqttTool(core.DdTool):
    """dd_post and dd_subscribe with an mqtt:// broker: the session is the queue."""

    name = "dd-mqtt"
    port = None     # the bench's Mosquitto, set before the tools are made

    @property
    def broker_url(self):
        return f"mqtt://127.0.0.1:{self.port}/"

    def ready(self, broker, daemon):
        # Mosquitto cannot be asked for a session's consumers: the subscriber says it started,
        # and phase 3 lets it sit idle a second more (core.IDLE_SETTLE) before posting.
        return "starting" in daemon.log.read_text(errors="replace")

    def queued(self, bench):
        # dd_post exits once Mosquitto acknowledged every notice, which it does after queuing
        # each in the (declared) session: all of them wait there.
        return bench.args.small_count

    def purge(self, bench):
        pass    # a fresh subscriber's session: nothing is left from a phase that timed out

    def notice_watch(self, bench):
        return MqttNoticeWatch(self.port, self.exchange)


class Bench(core.Bench):
    def setup(self):
        args = self.args
        self.make_vhost("ddbench-mqtt")
        process, MqttTool.port = harness.start_mosquitto(self.work / "mosquitto")
        self.on_exit(harness.stop_group, process)
        self.src = self.work / "src"
        self.small = {name: harness.make_small_tree(self.src / name, args.small_count)
                      for name in ("small_a", "small_b")}
        self.big_path = self.src / "big" / "big.bin"
        if args.big_size:
            harness.make_big_file(self.big_path, args.big_size)
        self.start_tools([core.DdTool, MqttTool])

    def measure_limits(self):
        pass    # bench/core.py measures the machine's


def report(bench):
    rows = {(r.phase, r.tool): r for r in bench.rows}
    lines, targets = [], []
    for phase, what, rate in COMPARED:
        amqp, mqtt = rows.get((phase, "dd")), rows.get((phase, "dd-mqtt"))
        if amqp is None and mqtt is None:
            continue
        measured = [r for r in (amqp, mqtt) if r is not None and not r.status and r.seconds]
        ratio = amqp.seconds / mqtt.seconds if len(measured) == 2 else None
        lines.append([what, *(harness.cell(r.seconds if r in measured else None, ".3f") for r in (amqp, mqtt)),
                      harness.cell(ratio, ".2f")])
        if rate and phase in ("1 post small", "2 launch -> all files"):
            verdict = "" if ratio is None else ("met" if ratio >= TARGET else "MISSED")
            targets.append([f"{what}: MQTT speed / AMQP speed", f">= {TARGET}", harness.cell(ratio, ".2f"), verdict])
    big = harness.size_text(bench.args.big_size) if bench.args.big_size else "(none)"
    print(f"\ndd over MQTT (Mosquitto) vs dd over AMQP (RabbitMQ): {bench.args.small_count} x 1 KiB, 1 x {big}, "
          f"checksum {bench.args.checksum}; load average at start {bench.load}\n")
    print(format_table(["phase", "AMQP s", "MQTT s", "AMQP s / MQTT s"], lines))
    print()
    print(format_table(["target", "wanted", "measured", ""], targets))
    print("\n(AMQP s / MQTT s above 1: MQTT is faster; the phases are bench/core.py's)")
    harness.print_notes(bench.notes)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small-count", type=harness.positive, default=2000, help="small files per tree (2000)")
    parser.add_argument("--big-size", type=harness.byte_size, default=harness.parse_size("1G"),
                        help="size of the big file, e.g. 64M (1G); 0 skips phase 4")
    parser.add_argument("--checksum", choices=("sha512", "md5", "none"), default="sha512")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds each phase may take (120)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory and say where")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    core.require(["rabbitmqctl", "curl", harness.NGINX, harness.MOSQUITTO, "dd_post", "dd_subscribe"],
                 "install them (apt-get install mosquitto nginx-light curl)")
    return harness.run(Bench, args, "ddbench-mqtt-", report)


if __name__ == "__main__":
    sys.exit(main())
