"""dd_ctl's command line: one sub-command per verb module; errors become exit statuses in dd.cli.main."""
import argparse
import contextlib

from dd.admin import logs
from dd.admin.ctl import actions, check, edit, foreground, listing, sanity, status
from dd.core.errors import ExitStatus

VERBS = (status, check, sanity, actions, listing, edit, foreground)
DESCRIPTION = ("Run and watch every configuration of every dd daemon component as one service; "
               "see dd_ctl(8).")


def parser():
    top = argparse.ArgumentParser(prog="dd_ctl", description=DESCRIPTION)
    verbs = top.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb in VERBS:
        verb.add_parser(verbs)
    top.verbs = verbs.choices  # {verb: its parser}, for the man page's test
    return top


def dispatch(argv, env):
    """Run dd_ctl with `argv` in `env`; DDErrors propagate to dd.cli.main.run."""
    # argparse prints to sys.stdout/stderr and exits: keep both inside env.
    with contextlib.redirect_stdout(env.stdout), contextlib.redirect_stderr(env.stderr):
        try:
            args = parser().parse_args(argv)
        except SystemExit as stop:
            return ExitStatus.OK if stop.code == 0 else ExitStatus.USAGE
    logs.setup(level="warning", stream=env.stderr)
    return args.run(args, env)
