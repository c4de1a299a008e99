"""Entry points of the dd_* commands, and the one place errors become exit statuses.

Every command takes an Environment (streams, directories, variables) so tests
can run the real CLI in-process.
"""
import contextlib
import importlib
import logging
import os
import sys

from dd import components
from dd.admin import daemon
from dd.admin.daemon import ACTIONS
from dd.core import config
from dd.core.environment import Environment
from dd.core.errors import ConfigError, DDError, ExitStatus, exit_status

USAGE = {
    "post": "usage: dd_post [--config CONFIG] [--option value ...] [--delete] PATH...",
    **{name: f"usage: dd_{name} ACTION CONFIG [--option value ...]\n  ACTION: {', '.join(ACTIONS)}"
       for name in ("subscribe", "watch", "sara", "shovel")},
}
#: Commands that are not flow components: their own main(argv, env), imported when run.
COMMAND_MAINS = {"audit": "dd.admin.audit.main:main", "ctl": "dd.admin.ctl.main:dispatch", "log": "dd.admin.log:main"}
logger = logging.getLogger("dd")


def run(component, argv, env=None):
    """Run dd_<component> with `argv`; return its exit status."""
    env = env or Environment.from_process()
    try:
        if component in COMMAND_MAINS:
            module, _, function = COMMAND_MAINS[component].partition(":")
            return getattr(importlib.import_module(module), function)(list(argv), env)
        return _dispatch(component, list(argv), env)
    except DDError as error:
        print(f"dd_{component}: {error}", file=env.stderr)
        return exit_status(error)
    except KeyboardInterrupt:
        return ExitStatus.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`dd_log | head`): nothing more to say, and nothing wrong.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.OK
    except Exception as error:  # noqa: BLE001 - a bug: one line for the user, details in the log
        logger.debug("internal error", exc_info=True)
        print(f"dd_{component}: internal error: {error!r} (please report it; run with "
              f"--log_level debug for details)", file=env.stderr)
        return ExitStatus.FAILURE


def _dispatch(component, argv, env):
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE[component], file=env.stdout)
        print("options: see dd_options(5), or `show` for a configuration's effective values",
              file=env.stdout)
        return ExitStatus.OK if argv else ExitStatus.USAGE
    module = components.load(component)
    if not module.DAEMON:
        return _one_shot(module, argv, env)
    instance, detached = _pop_instance(argv)
    options, positionals = config.parse_args(argv, component)
    if len(positionals) != 2 or positionals[0] not in ACTIONS:
        raise ConfigError(f"expected ACTION CONFIG, got {' '.join(positionals) or 'nothing'}",
                          fix=USAGE[component].replace("\n", ";"))
    action, config_arg = positionals
    return daemon.act(action, component, config_arg, env, options, instance=instance, detached=detached)


def _pop_value(argv, flag):
    """Remove `flag VALUE` from argv and return VALUE (None when absent)."""
    if flag not in argv:
        return None
    at = argv.index(flag)
    if at + 1 >= len(argv):
        raise ConfigError(f"{flag} needs a value")
    value = argv[at + 1]
    del argv[at:at + 2]
    return value


def _pop_instance(argv):
    value = _pop_value(argv, "--instance")
    if value is None:
        return 1, False
    if not value.isdigit():
        raise ConfigError("--instance needs a number")
    return int(value), True


def _one_shot(module, argv, env):
    deleted = "--delete" in argv
    argv = [a for a in argv if a != "--delete"]
    config_arg = _pop_value(argv, "--config")
    options, paths = config.parse_args(argv, module.NAME)
    if not paths:
        raise ConfigError("no PATH to announce", fix=USAGE[module.NAME])
    cfg = config.load(module.NAME, config_arg, options, env)
    return daemon.run_once(module, cfg, env, paths, deleted=deleted)


def _entry_point(command):
    def main():
        return run(command, sys.argv[1:])
    main.__name__ = command
    return main


# The console scripts dd_<command> (setup.py names them).
post, subscribe, watch, sara, shovel, audit, ctl, log = map(
    _entry_point, ("post", "subscribe", "watch", "sara", "shovel", "audit", "ctl", "log"))


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
