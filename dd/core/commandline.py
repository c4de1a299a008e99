"""The command line of every dd_<name> command: argparse for the command's own flags and
arguments, the options table for `--name value` (dd_options(5)).

A usage error is a ConfigError whose fix is the usage, so that it leaves through the one
exit path of dd.cli.main: one line, exit status 2.  --help is printed on the command's
stdout, and then the command is done (HelpShown: exit status 0).
"""
from __future__ import annotations

import argparse
import contextlib
import textwrap
from collections.abc import Sequence
from typing import Any, NoReturn

from dd.core import commands, config
from dd.core.environment import Environment
from dd.core.errors import ConfigError
from dd.core.options import BY_NAME, OPTIONS

#: The epilog of the commands that read a configuration.
OPTIONS_EPILOG = "Options of the configuration (dd_options(5)) are also accepted as --name value."


def described(command: str, epilog: str = OPTIONS_EPILOG, actions: bool = False) -> dict[str, Any]:
    """The Parser arguments that give dd_<command>'s --help its purpose, its actions (a daemon's),
    its common options and its example, as commands.ABOUT declares them."""
    about = commands.ABOUT[command]
    sections = []
    if actions:
        sections.append("actions:\n" + _rows(commands.ACTIONS.items()))
    sections.append("common options (in the configuration, or as --name value; all in dd_options(5)):\n"
                    + _rows((name, _first_clause(BY_NAME[name].help)) for name in about.options))
    config_lines = textwrap.indent(about.config, "    ")
    sections.append(f"example: with this in {command}/NAME.conf of dd's config directory (~/.config/dd),\n"
                    f"{config_lines}  where NAME is {_config_name(about.example)}, run\n    {about.example}")
    sections.append(textwrap.fill(epilog, 79))
    return dict(description=textwrap.fill(about.purpose, 79), epilog="\n\n".join(sections),
                formatter_class=argparse.RawDescriptionHelpFormatter)


def _config_name(example: str) -> str:
    words = example.split()
    return words[words.index("--config") + 1] if "--config" in words else \
        next(w for w in words[1:] if not w.startswith("-") and w not in commands.ACTIONS)


def _first_clause(text: str) -> str:
    return text.split("; ")[0]


def _rows(pairs: Any, width: int = 79) -> str:
    pairs = list(pairs)
    left = max(len(name) for name, _ in pairs) + 4
    return "\n".join(textwrap.fill(text, width, initial_indent=f"  {name}".ljust(left),
                                    subsequent_indent=" " * left) for name, text in pairs)


class HelpShown(Exception):
    """--help was printed: the command has nothing more to do."""


class Parser(argparse.ArgumentParser):
    """argparse for a dd command.  It never exits: a usage error raises ConfigError, --help
    raises HelpShown once printed.  It never guesses a flag from its first letters, which
    could take an option of the table for one of the command's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)
        self.verbs: dict[str, Parser] = {}

    def add_verbs(self) -> argparse._SubParsersAction[Parser]:
        """Sub-commands, one a verb (args.verb); parse() insists on one."""
        verbs = self.add_subparsers(dest="verb", metavar="VERB", parser_class=Parser)
        self.verbs = verbs.choices
        return verbs

    def usage_line(self) -> str:
        return " ".join(self.format_usage().split())

    def error(self, message: str) -> NoReturn:
        raise ConfigError(message, fix=self.usage_line())

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        # argparse exits by itself only once it printed --help: error() never comes here.
        raise HelpShown


def parse(parser: Parser, argv: Sequence[str], env: Environment,
          component: str | None = None) -> tuple[argparse.Namespace, list[tuple[str, str]]]:
    """The command's own arguments, and the (option, value text) pairs of the options table
    for config.load when the command reads a configuration as `component`."""
    options, rest = config.take_options(argv, component) if component else ([], list(argv))
    with contextlib.redirect_stdout(env.stdout):    # where argparse prints --help
        args, extras = parser.parse_known_args(rest)
    if extras:
        raise _unexpected(extras, parser, component)
    if parser.verbs and args.verb is None:
        raise ConfigError("no VERB given", fix=f"use one of {', '.join(parser.verbs)}; {parser.usage_line()}")
    return args, options


def _unexpected(extras: list[str], parser: Parser, component: str | None) -> ConfigError:
    usage = parser.usage_line()
    flag = next((extra for extra in extras if extra.startswith("-")), None)
    if flag is None:
        return ConfigError(f"unexpected argument {extras[0]!r}", fix=usage)
    dashes = "--" if flag.startswith("--") else "-"
    # Only a --name of a command that reads a configuration may be a mistyped option of the table.
    candidates = [o.name for o in OPTIONS if component in o.components] if dashes == "--" else []
    pages = "; dd_options(5) lists the options" if candidates else ""
    return config.unknown_option(flag[len(dashes):].partition("=")[0], config.COMMAND_LINE,
                                 candidates=candidates, prefix=dashes, otherwise=usage + pages)
