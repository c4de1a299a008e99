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
