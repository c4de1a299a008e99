"""The dd_<name> commands dd installs, and the flow components among them, declared once.

setup.py installs COMMANDS as console scripts and dd.cli.main makes their entry points;
dd.components loads COMPONENTS; the options table (dd.core.options) says which of its
options each command of CONFIGURED takes.  setup.py runs this file on its own, before
dd's dependencies may be installed: it imports nothing.
"""

#: The flow components, each a module of dd.components.
COMPONENTS = ("post", "subscribe", "watch", "poll", "sara", "shovel", "sender")
#: The tools of dd.admin that read a configuration of their own, as the components do.
CONFIGURED_TOOLS = ("audit", "log")
#: Every command: dd_ctl runs the daemon components' configurations and has none of its own.
COMMANDS = COMPONENTS + CONFIGURED_TOOLS + ("ctl",)
#: What dd_ctl runs beside the components from a configuration of its own (web/console.conf)
#: without being a command: the web console (dd_ctl web).
SERVICES = ("web",)
#: The commands and services that read a configuration.
CONFIGURED = COMPONENTS + CONFIGURED_TOOLS + SERVICES


def command_of(name: str) -> str:
    """How a user runs what reads configurations of `name`: dd_<name>, or dd_ctl <service>."""
    return f"dd_ctl {name}" if name in SERVICES else f"dd_{name}"


class About:
    """What a command's --help says beyond its usage: one sentence of purpose, the options of
    the table most set, and one working example (a configuration and the command that runs it)."""

    def __init__(self, purpose: str, options: "tuple[str, ...]", config: str, example: str) -> None:
        self.purpose = purpose
        self.options = options      # names in the options table (dd_options(5))
        self.config = config        # the example's configuration, NAME.conf in dd's config directory
        self.example = example      # the command line that runs it


#: The actions of a daemon component (dd_<component> ACTION CONFIG), and what each does.
ACTIONS = {
    "foreground": "run one instance here, logging to the terminal, until Ctrl-C",
    "start": "start the configured number of instances in the background",
    "stop": "stop the background instances",
    "restart": "stop, then start",
    "status": "say whether it runs, what it delivered, what waits in its queue and for a retry",
    "show": "print the effective options and where each comes from",
    "declare": "declare its queue on the broker, and bind it",
    "cleanup": "delete its queue and its state (stop it first)",
}

ABOUT = {
    "post": About(
        "Announce files and trees: one notice per file, published to a broker for subscribers to download.",
        ("post_broker", "post_base_url", "post_base_dir", "post_exchange", "accept", "reject"),
        "post_broker amqp://ann@localhost/\npost_base_url http://localhost/ann/\npost_base_dir /srv/ann\n",
        "dd_post --config ann /srv/ann/today"),
    "subscribe": About(
        "Download the files announced on a pump's queue into a local tree, verified before they appear.",
        ("broker", "exchange", "subtopic", "directory", "accept", "reject", "instances"),
        "broker amqp://anonymous@localhost/\nsubtopic obs/#\ndirectory /data/obs\naccept .*\n",
        "dd_subscribe start obs"),
    "watch": About(
        "Watch directories and announce each file as it is written, moved or removed.",
        ("path", "post_broker", "post_base_url", "post_base_dir", "accept", "reject"),
        "path /srv/ann/incoming\npost_broker amqp://ann@localhost/\npost_base_url http://localhost/ann/\n"
        "post_base_dir /srv/ann\n",
        "dd_watch start incoming"),
    "poll": About(
        "List a remote directory now and then, and announce what is new in it.",
        ("poll_url", "post_broker", "post_exchange", "accept", "reject"),
        "poll_url http://data.example.com/obs/\npost_broker amqp://ann@localhost/\n",
        "dd_poll start obs"),
    "sara": About(
        "Relay a pump's notices: download each file into this pump's tree and announce it from here.",
        ("broker", "exchange", "post_broker", "post_exchange", "post_base_url", "directory", "data_server_port"),
        "broker amqp://feeder@localhost/\nexchange xs_ann\npost_broker amqp://feeder@localhost/\n"
        "post_base_url http://localhost:8080/\ndirectory /srv/pump\ndata_server_port 8080\n",
        "dd_sara start pump"),
    "shovel": About(
        "Copy notices from one broker's queue to another exchange, or route log messages to their sources.",
        ("broker", "exchange", "subtopic", "post_broker", "post_exchange", "route_logs"),
        "broker amqp://anonymous@localhost/\nsubtopic obs/#\npost_broker amqp://feeder@localhost/\n"
        "post_exchange xs_feeder\n",
        "dd_shovel start obs"),
    "sender": About(
        "Send the files announced on a queue to a remote server (SFTP, FTP(S)) or directory, and announce them there.",
        ("broker", "exchange", "subtopic", "destination", "post_broker", "post_base_url"),
        "broker amqp://feeder@localhost/\ndestination file:/srv/outgoing\naccept .*\n",
        "dd_sender start partner"),
    "log": About(
        "Read your own log messages: where the files you posted went (dd_log(7)).",
        ("broker", "exchange", "accept"),
        "broker amqp://ann@localhost/\n",
        "dd_log ann --follow"),
}
