"""dd_audit status: how the broker differs from admin.conf; exit 0 in sync, 1 not."""
import json

from dd.admin.audit import reconcile
from dd.core.errors import ExitStatus

HELP = "compare the broker with admin.conf and report what differs"


def add_parser(verbs):
    parser = verbs.add_parser("status", help=HELP, description=HELP)
    parser.add_argument("--json", action="store_true", help="print the report as JSON (dd_audit(8))")
    return parser


def run(args, ctx):
    found = reconcile.differences(ctx.plan, ctx.api, ctx.passwords)
    out = ctx.env.stdout
    if args.json:
        json.dump({"vhost": ctx.plan.vhost, "in_sync": not found, "users": len(ctx.plan.users),
                   "differences": [d.as_json() for d in found]}, out, indent=2)
        out.write("\n")
    else:
        for difference in found:
            pruning = f"; declare --prune would: {difference.pruning}" if difference.prune else ""
            print(f"{difference}{pruning}", file=out)
        print(f"dd_audit status: vhost {ctx.plan.vhost}, {len(ctx.plan.users)} user(s), "
              + ("in sync with admin.conf" if not found else f"{len(found)} difference(s)"), file=out)
    return ExitStatus.OK if not found else ExitStatus.FAILURE
