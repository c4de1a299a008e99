"""dd_audit declare: make the broker match admin.conf; running it twice changes nothing."""
from dd.audit import reconcile
from dd.errors import ExitStatus

HELP = "create or correct users, permissions and exchanges to match admin.conf"


def add_parser(verbs):
    parser = verbs.add_parser("declare", help=HELP, description=HELP)
    parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    return parser


def run(args, ctx):
    found = reconcile.differences(ctx.plan, ctx.api, ctx.passwords)
    changed = 0
    for difference in found:
        if difference.fix is None:
            print(f"left alone: {difference.kind} {difference.name}: {difference.problem}", file=ctx.env.stdout)
            continue
        verb = "would fix" if args.dry_run else "fixed"
        if not args.dry_run:
            difference.fix()
        changed += 1
        print(f"{verb}: {difference.kind} {difference.name}: {difference.problem}", file=ctx.env.stdout)
    print(f"dd_audit declare: {changed} change(s){' needed' if args.dry_run else ''} on vhost {ctx.plan.vhost}",
          file=ctx.env.stdout)
    return ExitStatus.OK
