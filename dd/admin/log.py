"""dd_log: read your own log messages — where the files you posted went (dd_log(7)).

A durable queue of yours, bound to the exchange the pump routes your log
messages to (xr_<you>), kept between runs so nothing routed meanwhile is
missed.  Prints what is there as a table, or one JSON object per line, and
stops once the queue is empty, or follows it until Ctrl-C.
"""
import datetime
import time

import humanize

from dd import components, flow
from dd.core import commandline, config, report
from dd.core.environment import Environment
from dd.core.errors import ExitStatus, NoticeError
from dd.admin import shown
from dd.pump import provenance
from dd.store.state import ConfigState

#: With nothing arriving for this long, a run without --follow is done.
IDLE = 1.0
#: Widths are minimums: nothing is cut, so no name can hide behind a cut.
COLUMNS = "{when:<19}  {outcome:<28}  {size:>9}  {time:>8}  {who:<28}  {file}"
#: --trace: one line per step of a file's route; SECONDS since its source posted it (since the
#: first pump took it up when no log message told when it was posted).
TRACE = "  {when:<23}  {step:<9}  {latency:>8}  {who:<36}  {outcome}"


def parser() -> commandline.Parser:
    top = commandline.Parser(prog="dd_log", usage="%(prog)s [CONFIG] [--follow] [--json] [--option value ...]\n"
                                                  "       %(prog)s --trace PATTERN [--option value ...]",
                             **commandline.described("log"))
    top.add_argument("config", nargs="?", metavar="CONFIG",
                     help="a configuration of dd_log: a name in dd's config directory, or a path")
    top.add_argument("--follow", action="store_true", help="keep reading as log messages arrive, until Ctrl-C")
    top.add_argument("--json", action="store_true", help="one log message a line, as the pump published it")
    top.add_argument("--trace", metavar="PATTERN",
                     help="on a pump: the route of each file whose path has PATTERN in it (or matches it, with * ? "
                          "[), from the provenance store its log router keeps")
    return top


def main(argv: list[str], env: Environment) -> int:
    args, options = commandline.parse(parser(), argv, env, "log")
    follow, as_json = args.follow, args.json
    cfg = config.load("log", args.config, options, env)
    if args.trace is not None:
        return trace(args.trace, cfg, env)
    # The queue is a consuming configuration's, kept in the state directory like any other.
    state = ConfigState(env.state_dir, "log", cfg.name or "default")
    consumer = flow.consumer(components.Context(cfg=cfg, env=env, credentials=cfg.credentials, state=state))
    try:
        consumer.start()
        if not as_json:
            print(COLUMNS.format(when="WHEN (UTC)", outcome="OUTCOME", size="BYTES", time="SECONDS",
                                 who="WHO", file="FILE"), file=env.stdout, flush=True)
        quiet_since = time.monotonic()
        while follow or time.monotonic() - quiet_since < IDLE:
            deliveries = consumer.fetch(IDLE / 2)
            for delivery in deliveries:
                _show(delivery, as_json, cfg.max_notice_size, env)
            consumer.ack(deliveries)
            if deliveries:
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    return ExitStatus.OK


def trace(pattern, cfg, env):
    """Print the route of each file of the provenance store matching `pattern`; exit 1 when none does."""
    store = provenance.reader(cfg, env.state_dir)
    try:
        found = provenance.files(store.search(provenance.Query(name=pattern)))
        for file in found:
            route = store.route(file.events[0])
            print(f"{shown.text(file.name)}  (source {shown.name(file.source)})", file=env.stdout)
            print(TRACE.format(when="WHEN (UTC)", step="STEP", latency="SECONDS", who="WHO", outcome="OUTCOME"),
                  file=env.stdout)
            if route.posted is not None:
                print(TRACE.format(when=_when(route.posted, precise=True), step="posted", latency="0.000",
                                   who=shown.name(file.source), outcome=""), file=env.stdout)
            for event in route.hops + route.deliveries:
                ingested = event.component in provenance.RELAYS and event.outcome == "delivered"
                rule = f" [{event.rule}]" if event.rule else ""
                outcome = shown.text(f"{event.code} {event.message}{rule} {event.rel_path}")
                print(TRACE.format(when=_when(event.at, precise=True), step="ingested" if ingested else event.outcome,
                                   latency=f"{event.at - route.start:.3f}",
                                   who=shown.who(event.consumer, event.host, event.component), outcome=outcome),
                      file=env.stdout)
    finally:
        store.close()
    if not found:
        print(f"dd_log: no file matching {pattern!r} in the provenance store {store.path}", file=env.stderr)
        return ExitStatus.FAILURE
    return ExitStatus.OK


def _when(timestamp, precise=False):
    text = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] if precise else text[:-7]


def _show(delivery, as_json, max_size, env):
    try:
        if len(delivery.body) > max_size:
            raise NoticeError(f"{len(delivery.body)} bytes, over max_notice_size {max_size}")
        made = report.decode(delivery.body)
    except NoticeError as error:
        print(f"dd_log: unreadable log message on topic {delivery.topic}: {error}", file=env.stderr)
        return
    if as_json:
        # The log message as published (dd_log(7)): one JSON object a line.
        env.stdout.write(delivery.body.decode() + "\n")
    else:
        env.stdout.write(COLUMNS.format(
            when=_when(made.pubtime.timestamp()),
            outcome=f"{made.code} {shown.text(made.message)}", size=humanize.naturalsize(made.bytes, binary=True),
            time=f"{made.duration:.3f}", who=shown.who(made.user, made.host, made.component),
            file=shown.text(made.rel_path)) + "\n")
    env.stdout.flush()
