"""What crosses the steps of a flow: one message on its way through it."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Optional, Union

from dd.core.notice import Notice
from dd.core.outcome import Outcome
from dd.core.report import Report

if TYPE_CHECKING:
    from dd.core.config import Mask


@dataclasses.dataclass
class Item:
    """One message on its way through a flow: gathered, judged, worked on, posted, logged.

    The payload is what was read (a notice; for a pump's log router, a log message); the
    receipt is the gatherer's own, what finishing the item takes (an AMQP delivery to
    acknowledge, a retry entry, what dd_watch announced), opaque to every other step."""

    payload: Union[Notice, Report, None]    # None: the message could not be read (outcome says why)
    receipt: Any = None
    outcome: Optional[Outcome] = None
    outgoing: Optional[Notice] = None       # the notice the post step announces
    destination: Any = None                 # where a post step routing each item its own way sends it
    skipped: bool = False                   # not accepted by subtopic/accept/reject: no work, no report
    mask: Optional[Mask] = None             # the accept line that took it
    refused_by: Optional[str] = None        # the rule that did not accept it, for the log

    @property
    def notice(self) -> Optional[Notice]:
        """The notice gathered, if a notice it is."""
        return self.payload if isinstance(self.payload, Notice) else None

    @property
    def report(self) -> Optional[Report]:
        """The log message gathered, if a log message it is (a log router's item)."""
        return self.payload if isinstance(self.payload, Report) else None

    @property
    def name(self) -> str:
        """What the item is about, for log lines."""
        return self.payload.rel_path if self.payload is not None else "an undecodable notice"
