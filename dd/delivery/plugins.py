"""Validation plugins: Python functions named `python:package.module:function` by on_notice
and on_file, run in the component's process, in its delivery threads (dd_plugins(7)).

on_notice(notice) runs before anything is done for a notice; on_file(local_path, notice)
once the file is verified and in place.  What either returns is its verdict: None or True
accepts; a string, Reject(reason) or False refuses (4xx, never retried); on_notice may
return a changed Notice instead, judged again as any notice from the wire is.  An
exception is the plugin's failure, never the flow's: the notice gets a 500 naming the
plugin and the exception, with the traceback at debug level.

A plugin gets a copy of the notice: what it changes in place counts only once returned.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

from dd.core.errors import ConfigError
from dd.core.notice import Notice
from dd.core.options import python_spec
from dd.delivery.hooks import HookFailed, HookRejected

log = logging.getLogger("dd.plugins")


@dataclasses.dataclass(frozen=True)
class Reject:
    """A plugin's refusal, with the reason the log and the log message give."""

    reason: str


class PluginFailed(Exception):
    """The plugin raised, or returned what no verdict is: its message names the plugin."""


@dataclasses.dataclass(frozen=True)
class Plugin:
    """A loaded plugin: `name` (module:function) for the log, the function to call."""

    option: str
    name: str
    function: Callable[..., Any]

    def call(self, *args: Any) -> Any:
        """The function's return value; PluginFailed, with the traceback logged at debug level,
        when it raises."""
        try:
            return self.function(*args)
        except Exception as error:  # noqa: BLE001 - a plugin's bug is its notice's failure, not dd's
            log.debug("%s %s raised", self.option, self.name, exc_info=True)
            raise PluginFailed(f"{self.option} {self.name} raised {type(error).__name__}: "
                               f"{_one_line(error)}") from None

    def verdict(self, value: Any, *, changes: bool = False) -> Union[None, Reject, Notice]:
        """None: accepted; a Reject: refused; a Notice (when `changes`): changed."""
        if value is None or value is True:
            return None
        if value is False:
            return Reject("")
        if isinstance(value, (str, Reject)):
            return Reject(_one_line(value if isinstance(value, str) else value.reason))
        if changes and isinstance(value, Notice):
            return value
        expected = "None, True, a Notice, a reason or Reject" if changes else "None, True, a reason or Reject"
        raise PluginFailed(f"{self.option} {self.name} returned {type(value).__name__}, not {expected}")

    def refused(self, what: str, reject: Reject) -> str:
        """The log's words for a refusal of `what`."""
        return f"{self.option} {self.name} refused {what}" + (f": {reject.reason}" if reject.reason else "")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def load(option: str, spec: str, search: Optional[Path] = None) -> Plugin:
    """The plugin `spec` (python:package.module:function) names; ConfigError, one line naming
    the option, when it cannot be imported or is no function.  `search` (the configuration
    directory's plugins/) is looked in after the rest of sys.path."""
    parts = python_spec(spec)
    if parts is None:
        raise ConfigError(f"{option} {spec} is not python:package.module:function")
    module_name, function_name = parts
    if search is not None and str(search) not in sys.path:
        sys.path.append(str(search))
    where = f"on PYTHONPATH or in {search}" if search else "on PYTHONPATH"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        raise ConfigError(f"{option} {spec}: no module {error.name}",
                          fix=f"put {module_name.replace('.', '/')}.py {where}") from None
    except Exception as error:  # noqa: BLE001 - whatever its import raises is a config error
        log.debug("importing %s", module_name, exc_info=True)
        raise ConfigError(f"{option} {spec}: importing {module_name} raised {type(error).__name__}: "
                          f"{_one_line(error)}", fix="fix the plugin") from None
    function = getattr(module, function_name, None)
    if function is None:
        raise ConfigError(f"{option} {spec}: {module_name} has no {function_name}",
                          fix=f"define {function_name} in {getattr(module, '__file__', module_name)}")
    if not callable(function):
        raise ConfigError(f"{option} {spec}: {function_name} is a {type(function).__name__}, not a function",
                          fix="name a function")
    return Plugin(option, f"{module_name}:{function_name}", function)


class NoticeCheck:
    """on_notice: the verdict on a notice before anything is done for it."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    def __call__(self, notice: Notice) -> Union[None, str, Notice]:
        """None: go on with `notice`; a str: refused, the log's words for it; a Notice: go on
        with this one instead.  PluginFailed when the plugin failed."""
        verdict = self.plugin.verdict(self.plugin.call(copy.deepcopy(notice)), changes=True)
        return self.plugin.refused(notice.rel_path, verdict) if isinstance(verdict, Reject) else verdict


class FileCheck:
    """on_file python:...: a hook of dd.delivery.hooks.Hooked, run at least once like a command."""

    def __init__(self, plugin: Plugin):
        self.plugin = plugin

    def run(self, local_path: str, notice: Notice) -> None:
        """HookRejected when the plugin refuses the file, HookFailed when it failed."""
        try:
            verdict = self.plugin.verdict(self.plugin.call(local_path, copy.deepcopy(notice)))
        except PluginFailed as error:
            raise HookFailed(f"{error} for {local_path}",
                             fix="run with log_level debug for its traceback") from None
        if isinstance(verdict, Reject):
            raise HookRejected(self.plugin.refused(local_path, verdict))
