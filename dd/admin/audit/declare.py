"""dd_audit declare: make the broker match admin.conf; running it twice changes nothing."""
from dd.admin.audit import reconcile
from dd.core.errors import ExitStatus

HELP = "create or correct users, permissions and exchanges to match admin.conf"


def add_parser(verbs):
    parser = verbs.add_parser("declare", help=HELP, description=HELP)
    parser.add_argument("--dry-run", action="store_true", help="say what would change, change nothing")
    parser.add_argument("--prune", action="store_true",
                        help="also revoke the users admin.conf no longer declares: their permissions, "
                             "connections and dd objects on this vhost, and the user when nothing else has it")
    return parser


def run(args, ctx):
    found = reconcile.differences(ctx.plan, ctx.api, ctx.passwords)
    out = ctx.env.stdout
    changed = left = 0
    for difference in found:
        if difference.fix is not None:
            if not args.dry_run:
                difference.fix()
            changed += 1
            print(f"{'would fix' if args.dry_run else 'fixed'}: {difference}", file=out)
        elif difference.prune and args.prune:
            for step in difference.prune:
                if not args.dry_run:
                    step.run()
            changed += len(difference.prune)
            print(f"{'would prune' if args.dry_run else 'pruned'}: {difference}: {difference.pruning}", file=out)
        elif difference.prune:
            left += 1
            print(f"left alone: {difference}; --prune would: {difference.pruning}", file=out)
        else:
            print(f"left alone: {difference}", file=out)
    print(f"dd_audit declare: {changed} change(s){' needed' if args.dry_run else ''} on vhost {ctx.plan.vhost}"
          + (f"; {left} undeclared user(s) left alone (--prune revokes them)" if left else ""), file=out)
    return ExitStatus.OK
