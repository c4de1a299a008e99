"""dd_ctl sanity: restart instances that died, remove stale pid files, and find dd processes
no pid file knows (strays)."""
import os
import signal
from pathlib import Path

from dd.store import pidfile
from dd.admin import instances
from dd.admin import daemon
from dd.admin.ctl import selection
from dd.core.errors import DDError, ExitStatus, exit_status
from dd.store.state import ConfigState

HELP = "restart dead instances of started configurations and report stray dd processes"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "sanity", HELP, run)
    parser.add_argument("--kill-strays", action="store_true", help="send SIGTERM to stray processes")


def run(args, env):
    worst = ExitStatus.OK
    for configuration in selection.select(env, args.configurations):
        state = ConfigState(env.state_dir, configuration.component, configuration.name)
        for number in instances.stale(state):
            state.pid_file(number).unlink(missing_ok=True)
            print(f"{configuration}: instance {number}: stale pid file removed (it names no instance "
                  f"of this boot)", file=env.stdout)
        dead = instances.dead(state)
        if not dead:
            continue
        print(f"{configuration}: instance(s) {', '.join(map(str, dead))} died; restarting",
              file=env.stdout)
        try:
            daemon.act("start", configuration.component, configuration.name, env)
        except DDError as error:
            print(f"dd_ctl: {configuration}: {error}", file=env.stderr)
            worst = worst or exit_status(error)
    for identity, command in strays(env):
        verb = "stopping" if args.kill_strays else "not stopped (--kill-strays stops it)"
        print(f"stray process {identity.pid}: {command}: no pid file knows it; {verb}", file=env.stdout)
        if args.kill_strays:
            pidfile.send(identity, signal.SIGTERM)
        worst = worst or ExitStatus.FAILURE
    return worst


def strays(env):
    """(identity, command line) of our user's dd instances using this state directory that no
    pid file names."""
    known = {pid for directory in Path(env.state_dir).glob("*/*") if directory.is_dir()
             for pid in instances.running(ConfigState(env.state_dir, directory.parent.name,
                                                      directory.name)).values()}
    state_dir = os.path.realpath(env.state_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in known or int(entry.name) == os.getpid():
            continue
        # Identified first, alive after: what was read in between was that very process.
        identity = pidfile.identify(int(entry.name))
        described = instances.instance_of(int(entry.name))
        if identity and described and described[3] == state_dir and identity.alive():
            found.append((identity, " ".join(pidfile.command_line(identity.pid))))
    return sorted(found, key=lambda stray: stray[0].pid)
