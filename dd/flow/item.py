"""What crosses the steps of a flow: one notice on its way through it."""
import dataclasses
from typing import Optional

from dd.core.notice import Notice
from dd.core.outcome import Outcome


@dataclasses.dataclass
class Item:
    """One notice on its way through the flow."""

    notice: Optional[Notice]
    delivery: object = None          # what the gatherer needs to finish it (an AMQP delivery)
    outcome: Optional[Outcome] = None
    outgoing: Optional[Notice] = None  # what the post step announces
    skipped: bool = False            # not accepted by subtopic/accept/reject: no work, no report
    mask: object = None              # the accept line that took it (dd.core.config.Mask)
