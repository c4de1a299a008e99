"""Errors as values a user can read, and the one place they map to exit statuses.

Every failure dd reports is a DDError: a one-line message that names the thing
and, where there is one, the fix.  Rejections of notices also carry a short
machine-readable ``rule`` so that logs and delivery reports can name it.
"""
from __future__ import annotations

import enum

from dd.core.outcome import Code


class ExitStatus(enum.IntEnum):
    """Process exit statuses (`status` exits with an LsbStatus instead)."""

    OK = 0
    FAILURE = 1          # generic failure, or a notice not announced
    USAGE = 2            # bad command line or configuration
    UNAVAILABLE = 4      # broker or server unreachable
    DATA = 5             # input data refused (checksum, path, notice)
    INTERRUPTED = 130    # stopped by Ctrl-C


class LsbStatus(enum.IntEnum):
    """Exit statuses of `status` (dd_<component> and dd_ctl): the LSB init-script values."""

    RUNNING = 0          # every instance expected runs
    DEAD = 1             # fewer run than expected, or an instance died leaving its pid file
    NOT_RUNNING = 3      # no instance runs
    UNKNOWN = 4          # cannot tell: a configuration that does not load


class CheckStatus(enum.IntEnum):
    """Exit statuses of `dd_ctl check`: the Nagios plugin convention."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3


class DDError(Exception):
    """A failure with a message for people and a rule name for machines."""

    status = ExitStatus.FAILURE
    rule = "error"

    def __init__(self, message: str, *, fix: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
        if rule is not None:
            self.rule = rule

    def __str__(self) -> str:
        return f"{self.message} ({self.fix})" if self.fix else self.message


class ConfigError(DDError):
    status = ExitStatus.USAGE
    rule = "config"


class BrokerError(DDError):
    status = ExitStatus.UNAVAILABLE
    rule = "broker"


class StoreUnavailable(DDError):
    """A store shared by several hosts (Redis) did not answer, or answered with an error."""

    status = ExitStatus.UNAVAILABLE
    rule = "store"


#: The fix for a refused TLS certificate, a broker's or a data server's.
CERTIFICATE_FIX = ("use the host name the certificate names, or trust the CA that signed it: "
                   "SSL_CERT_FILE=/path/to/ca.pem")


class BrokerRefusal(BrokerError):
    """The broker answered and refused: the login, the vhost or its TLS certificate.
    Trying again at once cannot help; a one-shot command reports it instead of waiting."""


class TransferError(DDError):
    """A data transfer failed; ``retryable`` says whether trying again may help."""

    status = ExitStatus.UNAVAILABLE
    rule = "transfer"
    retryable = True
    code = Code.TRANSFER_FAILED     # the outcome it gives a notice


class NoticeError(DDError):
    """A notice was refused: malformed, hostile or inconsistent."""

    status = ExitStatus.DATA
    rule = "notice"


class PathError(NoticeError):
    rule = "path"


class ChecksumMismatch(TransferError):
    rule = "checksum"


def exit_status(error: BaseException) -> ExitStatus:
    """Map any exception to the status the command exits with."""
    if isinstance(error, DDError):
        return error.status
    if isinstance(error, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    return ExitStatus.FAILURE
