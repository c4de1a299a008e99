"""Running a configuration as background instances: start, stop, status.

Each instance is `python -m dd.cli.main COMPONENT foreground CONFIG --instance N`
in its own session, logging to its own rotated file; it writes its pid file
when it starts and removes it when it stops cleanly.
"""
import os
import signal
import subprocess
import sys
import time

from dd import logs
from dd.errors import ExitStatus
from dd.state import alive

STOP_WAIT = 15.0


def read_pid(path):
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def write_pid(path, pid=None):
    """Write `pid` (default: ours) to `path` atomically: status never reads half a number."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(f"{pid or os.getpid()}\n")
    os.replace(tmp, path)


def running(state):
    """{instance number: pid} of the instances alive now."""
    found = {}
    for path in state.pid_files():
        pid = read_pid(path)
        if pid and alive(pid):
            found[int(path.stem[1:])] = pid
    return found


def dead(state):
    """Instance numbers whose pid file is there but whose process is gone."""
    alive_now = running(state)
    return sorted(n for n in (int(p.stem[1:]) for p in state.pid_files()) if n not in alive_now)


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
        with open(log_path, "a") as log_stream:
            process = subprocess.Popen(
                [sys.executable, "-m", "dd.cli.main", state.component, "foreground", str(config_arg),
                 "--instance", str(instance)],
                env=child_env, stdin=subprocess.DEVNULL, stdout=log_stream, stderr=log_stream,
                start_new_session=True, close_fds=True)
        # The child writes its own pid file; write it too so status is right at once.
        write_pid(state.pid_file(instance), process.pid)
        started += 1
    return started


def stop(state, wait=STOP_WAIT):
    """SIGTERM every instance, SIGKILL what is still there after `wait` seconds."""
    pids = running(state)
    for pid in pids.values():
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(alive(p) for p in pids.values()):
        time.sleep(0.1)
    for pid in pids.values():
        if alive(pid):
            send_signal(pid, signal.SIGKILL)
    for path in state.pid_files():
        path.unlink(missing_ok=True)
    return len(pids)


def send_signal(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def status(state, expected):
    """(LSB exit status, running count): 0 all running, 1 some dead, 3 stopped."""
    count = len(running(state))
    if count >= expected:
        return ExitStatus.OK, count
    if count == 0 and not state.pid_files():
        return ExitStatus.NOT_RUNNING, count
    # LSB has no "partly running": some instance is dead with its pid file left.
    return ExitStatus.FAILURE, count
