"""dd_ctl web: the web console in the foreground (dd_ctl start runs it as web/console)."""
import signal
import threading
from pathlib import Path

from dd.admin import logs
from dd.admin.ctl import selection
from dd.core import config

HELP = "serve the web console (overview, provenance, /metrics) in the foreground until Ctrl-C"
#: The configuration the console reads when it exists: <config dir>/web/console.conf.
DEFAULT_NAME = "console"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "web", HELP, run, selectors=False)
    parser.add_argument("--port", type=int, help="port to listen on (default: web_port, 8470)")
    parser.add_argument("--config", metavar="NAME",
                        help=f"the console's configuration, web/NAME.conf (default: {DEFAULT_NAME}, if it exists)")


def load(name, env):
    """The console's configuration: web/NAME.conf, or the defaults when the default one is absent."""
    if name is None and not (Path(env.config_dir) / "web" / f"{DEFAULT_NAME}.conf").is_file():
        return config.load("web", None, [], env)
    return config.load("web", name or DEFAULT_NAME, [], env)


def run(args, env):
    from dd.admin.console.app import Console  # Flask and cheroot only for the console
    cfg = load(args.config, env)
    console = Console(cfg, env, args.port)
    logs.setup(level="info", stream=env.stderr)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    print(f"dd_ctl: web console at {console.url} (Ctrl-C stops it)", file=env.stderr, flush=True)
    console.serve(stop)
    return 0
