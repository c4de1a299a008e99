"""The typed joins of a flow: what a gatherer, a work step and a post step offer the loop.

A component is the loop with one of each: dd_post's gatherer walks files, dd_subscribe's
reads a broker queue; dd_sara's work step receives files, dd_shovel's routes log
messages; every post step publishes with confirms (dd.flow.posting)."""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, Protocol, runtime_checkable

from dd.flow.item import Item

if TYPE_CHECKING:
    from dd.core.config import Config
    from dd.core.credentials import Credentials
    from dd.core.environment import Environment
    from dd.store.metrics import Progress
    from dd.store.state import ConfigState
    from dd.broker import Endpoint

#: The filter step: whether an item is taken (subtopic, accept/reject, routes).
Accept = Callable[[Item], bool]
#: The work step: sets the item's outcome, and its outgoing notice when it announces one.
Work = Callable[[Item], None]
#: Before a batch's work: what is done best for all its items at once (one round trip).
Prepare = Callable[[list[Item]], None]


class Gatherer(Protocol):
    """Where a flow's items come from, and how they are finished."""

    def fetch(self, timeout: float) -> Optional[list[Item]]:
        """The next batch (maybe empty) within `timeout` seconds; None once there is no more."""

    def finish(self, items: list[Item]) -> None:
        """The items are done with (acknowledged, recorded): they never come back.  Called
        once for each batch fetched that was not empty, in the order fetched (some items may
        be left out: those not finished come back)."""

    def tick(self) -> None:
        """Serve the source while a batch is worked on (heartbeats)."""

    def close(self) -> None:
        """Let go of the source."""


@runtime_checkable
class Connected(Protocol):
    """A step on a broker connection: the node it is on, for dd_ctl status."""

    @property
    def endpoint(self) -> Optional[Endpoint]:
        """The broker connection, while it is open; None between connections."""


class PostStep(Protocol):
    """A post (or log) step: publishes what items carry, with the broker's confirms."""

    def post(self, items: list[Item]) -> list[Item]:
        """Publish; return the items whose messages the broker did not confirm."""

    def close(self) -> None:
        """Settle what is still waiting for confirms, and disconnect."""


class Context(Protocol):
    """What the steps of a configuration are wired from (dd.components.Context)."""

    @property
    def cfg(self) -> Config: ...

    @property
    def env(self) -> Environment: ...

    @property
    def credentials(self) -> Credentials: ...

    @property
    def state(self) -> Optional[ConfigState]: ...

    @property
    def instance(self) -> int: ...

    @property
    def progress(self) -> Optional[Progress]: ...
