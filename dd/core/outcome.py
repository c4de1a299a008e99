"""What happened to one notice: the outcome every step reports, and the table of its codes."""
from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dd.core.notice import Checksum


class Code(enum.IntEnum):
    """Every outcome code dd reports, HTTP-like: 2xx done, 3xx nothing to do, 4xx refused
    (trying again cannot help), 5xx failed (kept for retry).  Logs and log messages carry
    the number: dd_log(7), CODES, and dd_subscribe(1) document each one."""

    DELIVERED = 201         # done: written, deleted, linked or renamed in place; a log message routed
    PART_STORED = 202       # one part of a file stored; the file is not complete yet
    UNCHANGED = 304         # nothing to do: already in place, already absent, or a duplicate
    REFUSED_NOTICE = 400    # a notice or log message malformed or inconsistent
    DENIED = 403            # a path refused, a server that denies us, a log message from the wrong user
    NOT_FOUND = 404         # failed for good: a missing file, a bad URL, an unknown host key; no route
    SUPERSEDED = 409        # a part of an older version than the partial file being assembled
    WHOLE_MISMATCH = 422    # verified parts that do not make the announced file: the source is wrong
    FAILED = 500            # failed here: the local filesystem, a store, on_file, or a bug in dd
    TRANSFER_FAILED = 502   # a transfer failed (unreachable, reset, short or wrong data); retried
    GIVEN_UP = 503          # kept failing for longer than retry_ttl: no longer retried
    NO_SPACE = 507          # the local disk is full; retried


@dataclasses.dataclass
class Outcome:
    """What happened to one notice."""

    code: Code
    message: str = ""
    rule: str = ""
    local_path: str = ""
    nbytes: int = 0
    checksum: Checksum | None = None  # verified or computed on download; a 304's: of the whole file, in place
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        """Done, or nothing to do (2xx, 3xx)."""
        return self.code < 400

    @property
    def failed(self) -> bool:
        """Failed in a way that trying again may fix (5xx), rather than refused (4xx)."""
        return self.code >= 500
