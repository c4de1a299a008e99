"""Entry points of the dd_* commands, and the one place errors become exit statuses.

Every command takes an Environment (streams, directories, variables) so tests
can run the real CLI in-process.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

from dd import components
from dd.admin import daemon
from dd.admin.daemon import ACTIONS
from dd.components import Component
from dd.core import commandline, commands, config
from dd.core.environment import Environment
from dd.core.errors import ConfigError, DDError, ExitStatus, exit_status

logger = logging.getLogger("dd")


def run(command: str, argv: Sequence[str], env: Environment | None = None) -> int:
    """Run dd_<command> with `argv`; return its exit status."""
    env = env or Environment.from_process()
    try:
        return _main(command)(list(argv), env)
    except commandline.HelpShown:
        return ExitStatus.OK
    except DDError as error:
        print(f"dd_{command}: {error}", file=env.stderr)
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
        print(f"dd_{command}: internal error: {error!r} (please report it; run with "
              f"--log_level debug for details)", file=env.stderr)
        return ExitStatus.FAILURE


def parser(command: str) -> commandline.Parser:
    """dd_<command>'s command line, as its --help shows it."""
    if command in commands.COMPONENTS:
        return _component_parser(components.load(command))
    return _tool(command).parser()


def _main(command: str) -> Callable[[list[str], Environment], int]:
    if command in commands.COMPONENTS:
        return functools.partial(_component, components.load(command))
    return _tool(command).main


def _tool(command: str) -> ModuleType:
    """The module of dd_audit, dd_ctl or dd_log (parser() and main(argv, env)), imported when
    it runs: dd_post's start-up is measured, and it needs neither urllib3 nor their verbs."""
    if command == "audit":
        from dd.admin.audit import main as audit
        return audit
    if command == "ctl":
        from dd.admin.ctl import main as ctl
        return ctl
    if command == "log":
        from dd.admin import log
        return log
    raise ConfigError(f"no command dd_{command}", fix=f"use one of {', '.join(commands.COMMANDS)}")


def _component_parser(module: Component) -> commandline.Parser:
    prog = f"dd_{module.NAME}"
    if not module.DAEMON:  # dd_post
        top = commandline.Parser(
            prog=prog, usage="%(prog)s [--config CONFIG] [--option value ...] [--delete | --rename OLD] PATH...",
            **commandline.described(module.NAME))
        top.add_argument("--config", help="the configuration: a path, or a name in dd's config directory")
        how = top.add_mutually_exclusive_group()
        how.add_argument("--delete", action="store_true", help="announce that the PATHs were removed")
        how.add_argument("--rename", metavar="OLD",
                         help="announce that OLD was renamed to PATH, a file or a directory (the only PATH)")
        top.add_argument("paths", nargs="*", metavar="PATH", help="a file, or a directory to walk")
        return top
    top = commandline.Parser(prog=prog, usage="%(prog)s ACTION CONFIG [--option value ...]",
                             **commandline.described(module.NAME, actions=True))
    top.add_argument("action", nargs="?", choices=ACTIONS, metavar="ACTION", help="one of the actions below")
    top.add_argument("config", nargs="?", metavar="CONFIG",
                     help="the configuration: a path, or a name in dd's config directory")
    # The number of a background instance: `start` runs each with its own (dd.admin.instances).
    top.add_argument("--instance", type=_instance_number, help=argparse.SUPPRESS)
    return top


def _instance_number(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"needs a number, not {text!r}")
    return int(text)


def _component(module: Component, argv: list[str], env: Environment) -> int:
    top = _component_parser(module)
    args, options = commandline.parse(top, argv, env, module.NAME)
    if not module.DAEMON:
        if not args.paths:
            top.error("no PATH to announce")
        if args.rename is not None and len(args.paths) != 1:
            top.error(f"--rename {args.rename} takes one PATH, its new name, not {len(args.paths)}")
        cfg = config.load(module.NAME, args.config, options, env)
        return daemon.run_once(module, cfg, env, args.paths, deleted=args.delete, renamed_from=args.rename)
    if args.config is None:
        top.error(f"expected ACTION CONFIG, got {args.action or 'nothing'}")
    return daemon.act(args.action, module.NAME, args.config, env, options,
                      instance=args.instance or 1, detached=args.instance is not None)


def __getattr__(name: str) -> Callable[[], int]:
    """The console script dd_<name> (setup.py names dd.cli.main:<name>)."""
    if name not in commands.COMMANDS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def entry_point() -> int:
        return run(name, sys.argv[1:])
    entry_point.__name__ = entry_point.__qualname__ = name
    return entry_point


if __name__ == "__main__":
    sys.exit(run(sys.argv[1], sys.argv[2:]))
