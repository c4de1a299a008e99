"""dd_ctl web: the web console in the foreground, as `dd_ctl foreground web/console` would run it
(dd_ctl start runs it in the background as the configuration web/console)."""
from dd.admin import daemon
from dd.admin.ctl import selection

HELP = "serve the web console (overview, provenance, /metrics) in the foreground until Ctrl-C"
#: The configuration the console reads by default: <config dir>/web/console.conf.
DEFAULT_NAME = "console"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "web", HELP, run, selectors=False)
    parser.add_argument("--port", type=int, help="port to listen on instead of web_port")
    parser.add_argument("--config", metavar="NAME", default=DEFAULT_NAME,
                        help=f"the console's configuration, web/NAME.conf (default: {DEFAULT_NAME})")


def run(args, env):
    options = [("web_port", str(args.port))] if args.port is not None else []
    return daemon.act("foreground", "web", args.config, env, options)
