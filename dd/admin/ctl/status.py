"""dd_ctl status: one line per configuration, or the same as JSON; the exit status follows LSB."""
import datetime
import json

import humanize

from dd.admin import progress
from dd.admin.ctl import selection, survey
from dd.core.credentials import Url
from dd.core.errors import LsbStatus

HELP = "report state, instances, rates, transfers, queue depth and errors of each configuration"
COLUMNS = ("CONFIGURATION", "STATE", "INSTANCES", "RECEIVED/MIN", "POSTED/MIN", "FILES", "BYTES",
           "LAST ACTIVITY", "QUEUE", "RETRIES", "ERRORS/H", "BROKER NODE")
#: The worst first: some instance dead, then a status that cannot be told, then stopped.
_WORST_FIRST = (LsbStatus.DEAD, LsbStatus.UNKNOWN, LsbStatus.NOT_RUNNING)


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "status", HELP, run)
    parser.add_argument("--json", action="store_true", help="print JSON (see dd_ctl(8))")


def combined(statuses):
    """The LSB status of a set of configurations: 0 only when all of them run."""
    statuses = set(statuses)
    for status in _WORST_FIRST:
        if status in statuses:
            return status
    return LsbStatus.RUNNING if statuses else LsbStatus.NOT_RUNNING


def run(args, env):
    configurations = selection.select(env, args.configurations)
    everything = survey.survey(configurations, env)
    status = combined(f.status for f in everything)
    if args.json:
        json.dump({"status": int(status), "time": env.clock(),
                   "configurations": [f.as_json() for f in everything]}, env.stdout, indent=2)
        env.stdout.write("\n")
        return status
    if not everything:
        print(f"no configurations in {env.config_dir}", file=env.stdout)
        return status
    rows = [COLUMNS] + [_row(f, env.clock()) for f in everything]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip(), file=env.stdout)
    for facts in everything:
        for note in notes(facts):
            print(f"{facts.component}/{facts.name}: {note}", file=env.stdout)
    return status


def notes(facts):
    """What needs a person's attention, one phrase each."""
    if facts.error:
        yield facts.error
    for instance in facts.dead:
        yield f"instance {instance} is dead (pid file left; `dd_ctl sanity` restarts it)"
    for transfer in facts.in_flight:
        yield f"in flight: {progress.describe(transfer)}"
    yield from facts.broker_limits


def _row(facts, now):
    if facts.error:
        return (f"{facts.component}/{facts.name}", "error") + ("",) * (len(COLUMNS) - 2)
    last = (humanize.naturaltime(datetime.timedelta(seconds=max(now - facts.last_activity, 0)))
            if facts.last_activity else "never")
    return (f"{facts.component}/{facts.name}", facts.state, f"{facts.running}/{facts.expected}",
            f"{facts.received_per_minute:g}", f"{facts.posted_per_minute:g}", str(facts.files),
            humanize.naturalsize(facts.bytes, binary=True), last, _queue(facts),
            _or_dash(facts.retries), str(facts.errors_last_hour), _nodes(facts))


def _nodes(facts):
    """host:port of the broker nodes the running instances are on (a cluster's, when it has several)."""
    nodes = sorted({Url.parse(url).netloc if url else "(reconnecting)" for url in facts.broker_nodes.values()})
    return ",".join(nodes) or "-"


def _queue(facts):
    if facts.queue_depth is None and facts.queue:
        return "unknown"  # the broker could not be asked, or the queue is gone
    return _or_dash(facts.queue_depth)


def _or_dash(value):
    return "-" if value is None else str(value)
