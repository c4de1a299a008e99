"""dd_ctl sanity: restart instances that died, and find dd processes no pid file knows (strays)."""
import os
import re
import signal
from pathlib import Path

import platformdirs

from dd.cli import instances
from dd.cli import main as cli
from dd.ctl import selection
from dd.environment import APP
from dd.errors import DDError, ExitStatus, exit_status
from dd.state import ConfigState

HELP = "restart dead instances of started configurations and report stray dd processes"
_COMMAND = re.compile(r"dd\.cli\.main|dd_\w+")


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "sanity", HELP, run)
    parser.add_argument("--kill-strays", action="store_true", help="send SIGTERM to stray processes")


def run(args, env):
    worst = ExitStatus.OK
    for configuration in selection.select(env, args.configurations):
        state = ConfigState(env.state_dir, configuration.component, configuration.name)
        dead = instances.dead(state)
        if not dead:
            continue
        print(f"{configuration}: instance(s) {', '.join(map(str, dead))} died; restarting",
              file=env.stdout)
        try:
            cli.act("start", configuration.component, configuration.name, env)
        except DDError as error:
            print(f"dd_ctl: {configuration}: {error}", file=env.stderr)
            worst = worst or exit_status(error)
    for pid, command in strays(env):
        verb = "stopping" if args.kill_strays else "not stopped (--kill-strays stops it)"
        print(f"stray process {pid}: {command}: no pid file knows it; {verb}", file=env.stdout)
        if args.kill_strays:
            instances.send_signal(pid, signal.SIGTERM)
        worst = worst or ExitStatus.FAILURE
    return worst


def strays(env):
    """(pid, command line) of our users' dd instances using this state directory that no pid file names."""
    known = {instances.read_pid(p) for p in Path(env.state_dir).glob("*/*/i*.pid")}
    state_dir = os.path.realpath(env.state_dir)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in known or int(entry.name) == os.getpid():
            continue
        argv = _read_nul_list(entry / "cmdline")
        if not argv or not _is_instance(argv):
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _state_dir(_read_nul_list(entry / "environ")) == state_dir:
            found.append((int(entry.name), " ".join(argv)))
    return sorted(found)


def _is_instance(argv):
    """A dd daemon instance: `python -m dd.cli.main C foreground ...`, `dd_C foreground ...`
    or `dd_ctl foreground ...`."""
    if "foreground" not in argv:
        return False
    before = argv[:argv.index("foreground")]
    return any(_COMMAND.fullmatch(os.path.basename(word)) for word in before)


def _state_dir(environ):
    for item in environ:
        name, _, value = item.partition("=")
        if name == "DD_STATE_DIR" and value:
            return os.path.realpath(value)
    return os.path.realpath(platformdirs.user_state_dir(APP))


def _read_nul_list(path):
    try:
        data = path.read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in data.split(b"\0") if part]

