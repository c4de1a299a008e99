"""dd_ctl's command line: one sub-command per verb module; errors become exit statuses in dd.cli.main."""
from dd.admin import logs
from dd.admin.ctl import actions, check, edit, foreground, listing, sanity, status, web
from dd.core import commandline
from dd.core.environment import Environment

VERBS = (status, check, sanity, actions, listing, edit, foreground, web)
DESCRIPTION = ("Run and watch every configuration of every dd daemon component as one service; "
               "see dd_ctl(8).")


def parser() -> commandline.Parser:
    top = commandline.Parser(prog="dd_ctl", description=DESCRIPTION)
    verbs = top.add_verbs()
    for verb in VERBS:
        verb.add_parser(verbs)
    return top


def main(argv: list[str], env: Environment) -> int:
    """Run dd_ctl with `argv` in `env`; DDErrors propagate to dd.cli.main.run."""
    args, _ = commandline.parse(parser(), argv, env)
    logs.setup(level="warning", stream=env.stderr)
    return args.run(args, env)
