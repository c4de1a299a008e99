"""Running a configuration as background instances: start, stop, status.

Each instance is `python -m dd.cli.main COMPONENT foreground CONFIG --instance N`
in its own session, logging to its own rotated file; it writes its pid file
(dd.store.pidfile: the pid and the process's identity) when it starts and removes it
when it stops cleanly.  Only a pid file that names its live instance is
believed: a stale one is never signalled.
"""
import os
import re
import signal
import subprocess
import sys
import time
from typing import Optional

import platformdirs

from dd.admin import logs
from dd.core import commands
from dd.store import pidfile
from dd.core.environment import APP
from dd.core.errors import LsbStatus

STOP_WAIT = 15.0
#: The command words that run an instance: `python -m dd.cli.main C`, `dd_C`, `dd_ctl`.
_COMMAND = re.compile(r"dd\.cli\.main|dd_\w+")


def _number(path):
    return int(path.stem[1:])


def _live(state) -> dict[int, pidfile.Identity]:
    """{instance number: identity} of the instances whose pid file names them, running now."""
    found = {}
    for path in state.pid_files():
        identity = pidfile.live(path, legacy=_runs(state, _number(path)))
        if identity is not None:
            found[_number(path)] = identity
    return found


def _runs(state, number):
    """The check that a process is instance `number` of `state`'s configuration, by what it shows.

    A pid file of the old format (a bare pid, written before dd recorded identities) is
    believed only when this says yes: the process is ours, its command line runs this very
    instance and its environment uses this state directory.  A stranger holding the pid
    has none of that, so it is never signalled."""
    expected = (state.component, state.config_name, number, os.path.realpath(state.dir.parent.parent))
    return lambda pid: instance_of(pid) == expected


def running(state) -> dict[int, int]:
    """{instance number: pid} of the instances alive now."""
    return {number: identity.pid for number, identity in _live(state).items()}


def dead(state) -> list[int]:
    """Instance numbers that died in this boot, leaving their pid file."""
    return sorted(number for number, stale_file in _not_running(state) if not stale_file)


def stale(state) -> list[int]:
    """Instance numbers whose pid file says nothing about this boot (left from another boot,
    of the old format naming no instance, or not a pid file): not an instance that died."""
    return sorted(number for number, stale_file in _not_running(state) if stale_file)


def _not_running(state):
    """(instance number, whether its pid file is stale) of each pid file naming no running instance."""
    alive_now = running(state)
    return [(_number(p), pidfile.stale(p)) for p in state.pid_files() if _number(p) not in alive_now]


def start(ctx, config_arg):
    """Start the instances not already running; return how many were started."""
    state, cfg, env = ctx.state, ctx.cfg, ctx.env
    alive_now = running(state)
    child_env = dict(env.environ)
    child_env.update(DD_CONFIG_DIR=str(env.config_dir), DD_STATE_DIR=str(env.state_dir),
                     DD_LOG_DIR=str(env.log_dir))
    started = 0
    for instance in range(1, cfg.instances + 1):
        if instance in alive_now:
            continue
        log_path = logs.log_file(env.log_dir, state.component, state.config_name, instance)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # dd_ctl's own services (the web console) are no command of their own: dd_ctl runs them.
        words = (["ctl", "foreground", f"{state.component}/{config_arg}"] if state.component in commands.SERVICES
                 else [state.component, "foreground", str(config_arg)])
        with open(log_path, "a") as log_stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "dd.cli.main", *words, "--instance", str(instance)],
                env=child_env, stdin=subprocess.DEVNULL, stdout=log_stream, stderr=log_stream,
                start_new_session=True, close_fds=True)
        # The child writes its own pid file; write it too so status is right at once.
        pidfile.write(state.pid_file(instance), process.pid)
        started += 1
    return started


def stop(state, wait=STOP_WAIT):
    """SIGTERM every instance, SIGKILL what is still there after `wait` seconds; remove the
    pid files, stale ones included.  Return how many instances ran."""
    identities = list(_live(state).values())
    for identity in identities:
        pidfile.send(identity, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(i.alive() for i in identities):
        time.sleep(0.1)
    for identity in identities:
        pidfile.send(identity, signal.SIGKILL)
    for path in state.pid_files():
        path.unlink(missing_ok=True)
    return len(identities)


def status(state, expected):
    """(LSB exit status, running count): 0 all running, 1 some dead, 3 stopped."""
    count = len(running(state))
    if count >= expected:
        return LsbStatus.RUNNING, count
    if count == 0 and not dead(state):
        return LsbStatus.NOT_RUNNING, count
    # LSB has no "partly running": some instance is dead with its pid file left.
    return LsbStatus.DEAD, count


def state_word(status, count) -> str:
    """How `status` names an LSB status of `count` running instances."""
    if status == LsbStatus.RUNNING:
        return "running"
    if status == LsbStatus.NOT_RUNNING:
        return "stopped"
    return "partly running" if count else "dead"


def instance_of(pid) -> Optional[tuple[str, str, int, str]]:
    """(component, configuration name, instance number, real state directory) when process
    `pid` is a dd instance of this user: `python -m dd.cli.main C foreground CONFIG`,
    `dd_C foreground CONFIG` or `dd_ctl foreground C/NAME`, with `--instance N` or not."""
    if pidfile.owner(pid) != os.getuid():
        return None
    argv = pidfile.command_line(pid)
    if "foreground" not in argv:
        return None
    at = argv.index("foreground")
    words = [i for i, word in enumerate(argv[:at]) if _COMMAND.fullmatch(os.path.basename(word))]
    if not words or at + 1 >= len(argv):
        return None
    command = os.path.basename(argv[words[0]])
    component = argv[words[0] + 1] if command == "dd.cli.main" else command[len("dd_"):]
    config = argv[at + 1]
    if component == "ctl":
        component, _, config = config.partition("/")
    rest = argv[at + 2:]
    number = rest[rest.index("--instance") + 1] if "--instance" in rest[:-1] else "1"
    if not number.isdigit():
        return None
    return (component, os.path.basename(config).removesuffix(".conf"), int(number),
            _state_dir(pidfile.environment(pid)))


def _state_dir(environ):
    return os.path.realpath(environ.get("DD_STATE_DIR") or platformdirs.user_state_dir(APP))
