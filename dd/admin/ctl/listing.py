"""dd_ctl list: the configurations dd_ctl manages, and their files."""
from dd.admin.ctl import selection

HELP = "list the configurations (component/name) and their files"


def add_parser(subparsers):
    selection.add_verb(subparsers, "list", HELP, run)


def run(args, env):
    for configuration in selection.select(env, args.configurations):
        print(f"{configuration}\t{configuration.file}", file=env.stdout)
    return 0
