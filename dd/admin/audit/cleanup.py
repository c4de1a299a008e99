"""dd_audit cleanup: remove dd queues nobody consumes any more, or that grew too large."""
import datetime
import json

from dd.core.errors import ExitStatus

HELP = "remove q_* queues without a consumer for longer than expire, or holding more than queue_limit notices"


def add_parser(verbs):
    parser = verbs.add_parser("cleanup", help=HELP, description=HELP)
    parser.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    parser.add_argument("--json", action="store_true", help="print the removed queues as JSON")
    return parser


def stale(queue, *, now, expire, limit):
    """Why `queue` (a management API record) should go, or None."""
    if not queue.get("name", "").startswith("q_"):
        return None     # not a dd queue: not ours to judge
    if limit and queue.get("messages", 0) > limit:
        return f"holds {queue['messages']} notices, over queue_limit {limit}"
    idle_since = queue.get("idle_since")
    if queue.get("consumers", 0) == 0 and idle_since:
        idle = now - _parse_time(idle_since)
        if idle.total_seconds() > expire:
            return f"no consumer for {int(idle.total_seconds())} s, over expire {int(expire)} s"
    return None


def _parse_time(text):
    # 3.10+: 2026-11-29T06:16:06.623+00:00; older: 2026-11-29 6:16:06 (UTC).
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        moment = datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S")
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def run(args, ctx):
    now = datetime.datetime.fromtimestamp(ctx.env.clock(), datetime.timezone.utc)
    removed = []
    for queue in ctx.api.get("queues", ctx.plan.vhost) or []:
        reason = stale(queue, now=now, expire=ctx.cfg.expire, limit=ctx.cfg.queue_limit)
        if reason is None:
            continue
        if not args.dry_run:
            ctx.api.delete("queues", ctx.plan.vhost, queue["name"])
        removed.append({"queue": queue["name"], "reason": reason})
    if args.json:
        json.dump({"vhost": ctx.plan.vhost, "dry_run": args.dry_run, "removed": removed}, ctx.env.stdout, indent=2)
        ctx.env.stdout.write("\n")
    else:
        for entry in removed:
            print(f"{'would remove' if args.dry_run else 'removed'} queue {entry['queue']}: {entry['reason']}",
                  file=ctx.env.stdout)
        print(f"dd_audit cleanup: {len(removed)} queue(s) {'to remove' if args.dry_run else 'removed'}",
              file=ctx.env.stdout)
    return ExitStatus.OK
