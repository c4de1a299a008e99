"""The components: each is the common flow with a few choices.

A component is a module of this package that offers what Component declares: NAME,
DAEMON (runs as ACTION CONFIG with instances) and ``build(context) -> Flow``, and sets
the capabilities it lacks to None.  dd.core.commands lists them.  Components never
import each other.
"""
from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable
from typing import Protocol, cast, runtime_checkable

from dd.broker import Consumer, Subscription
from dd.core import commands
from dd.core.config import Config
from dd.core.credentials import Credentials
from dd.core.environment import Environment
from dd.core.errors import ConfigError
from dd.flow import Flow
from dd.store.metrics import Progress
from dd.store.state import ConfigState


@dataclasses.dataclass
class Context:
    """What a component is built from."""

    cfg: Config
    env: Environment
    credentials: Credentials
    state: ConfigState | None = None     # daemons (and dd_log's queue)
    instance: int = 1
    detached: bool = False      # a background instance: logs to its file, not stderr
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    arguments: tuple[str, ...] = ()     # dd_post's PATHs
    deleted: bool = False       # dd_post --delete: the PATHs were deleted
    renamed_from: str | None = None     # dd_post --rename OLD: the one PATH was OLD
    progress: Progress | None = None    # where transfers report their progress (status, a bar)


class Service(Protocol):
    """A helper server run beside a daemon's instances, started and stopped with them."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def pid(self) -> int | None: ...

    def status(self) -> str | None:
        """One line for `status`, or None when there is nothing to say."""


@runtime_checkable
class Component(Protocol):
    """What a module of dd.components offers."""

    NAME: str
    DAEMON: bool

    def build(self, ctx: Context) -> Flow: ...

    @property
    def subscription(self) -> Callable[[Context], Subscription] | None:
        """The queue a consuming daemon reads, chosen and kept before `start` starts
        instances that would race for its name; None for a component that consumes none."""

    @property
    def consumer(self) -> Callable[[Context], Consumer] | None:
        """The consumer of that queue (`declare` and `cleanup` use it); None likewise."""

    @property
    def services(self) -> Callable[[Context], list[Service]] | None:
        """What runs beside the instances, like a pump's data server; None for nothing."""


def load(name: str) -> Component:
    """The component dd_<name> runs."""
    if name not in commands.COMPONENTS:
        raise ConfigError(f"no component {name!r}", fix=f"use one of {', '.join(commands.COMPONENTS)}")
    return cast(Component, importlib.import_module(f"dd.components.{name}"))
