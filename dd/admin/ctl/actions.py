"""dd_ctl start, stop, restart, show, declare, cleanup: the components' own actions, per configuration."""
import functools

from dd.admin import daemon, runners
from dd.admin.ctl import selection
from dd.core.errors import ConfigError, DDError, ExitStatus, exit_status

HELP = {
    "start": "start the instances of each configuration that are not running",
    "stop": "stop every instance of each configuration",
    "restart": "stop, then start each configuration",
    "show": "print each configuration's effective options and where each value comes from",
    "declare": "declare each configuration's queue and bindings on its broker",
    "cleanup": "delete the queue of stopped configurations and forget its name (name them)",
}
#: Actions only components that consume from a queue have.
QUEUE_ACTIONS = ("declare", "cleanup")


def add_parser(subparsers):
    for action, text in HELP.items():
        selection.add_verb(subparsers, action, text, functools.partial(run, action))


def run(action, args, env):
    if action == "cleanup" and not args.configurations:
        raise ConfigError("cleanup removes queues: name the configurations",
                          fix="dd_ctl cleanup component/name")
    worst = ExitStatus.OK
    for configuration in selection.select(env, args.configurations):
        if action in QUEUE_ACTIONS and runners.module_of(configuration.component).consumer is None:
            continue
        if action == "show":
            print(f"# {configuration}: {configuration.file}", file=env.stdout)
        try:
            status = daemon.act(action, configuration.component, configuration.name, env)
        except DDError as error:
            print(f"dd_ctl: {configuration}: {error}", file=env.stderr)
            status = exit_status(error)
        worst = worst or status
    return worst
