"""dd_ctl foreground: run one instance of one configuration in this process (systemd's metpx-dd@.service)."""
from dd.admin import daemon
from dd.admin.ctl import selection

HELP = "run one instance of one configuration in the foreground, logging to stderr"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "foreground", HELP, run, selectors=False)
    parser.add_argument("configuration", metavar="COMPONENT/NAME")
    parser.add_argument("--instance", type=int, default=1, help="instance number (default 1)")


def run(args, env):
    configuration = selection.one(env, args.configuration)
    return daemon.act("foreground", configuration.component, configuration.name, env, instance=args.instance)
