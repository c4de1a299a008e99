"""Pid files that name one process: its pid, when it started and in which boot.

A pid alone names whoever holds that number now: after a reboot, or once the
kernel hands the pid to someone else, a pid file left behind would make dd
report a stranger as running and signal it.  So a pid file records the
process's identity: line 1 the pid (for people and tools that read a pid
file's first line), line 2 ``PID:START_TIME:BOOT_ID``, the start time being
field 22 of /proc/PID/stat (clock ticks since boot) and the boot id the
kernel's /proc/sys/kernel/random/boot_id.  A pid file is believed only while a
live process (not a zombie) has that pid, that start time and that boot id.
"""
import contextlib
import dataclasses
import functools
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Optional, Union

from dd.core import atomic

#: /proc/PID/stat states of a process that has exited: a zombie, or one being reaped.
_EXITED = ("Z", "X")


@dataclasses.dataclass(frozen=True)
class Identity:
    """One process, ever: a pid names another process once this one is gone."""

    pid: int
    start_time: int
    boot_id: str

    def __str__(self) -> str:
        return f"{self.pid}:{self.start_time}:{self.boot_id}"

    @classmethod
    def parse(cls, text: str) -> Optional["Identity"]:
        """The identity `str()` wrote, or None when `text` is not one."""
        fields = text.strip().split(":")
        if len(fields) != 3 or not (fields[0].isdigit() and fields[1].isdigit() and fields[2]):
            return None
        return cls(int(fields[0]), int(fields[1]), fields[2])

    def alive(self) -> bool:
        """Whether this very process still runs."""
        return _stat(self.pid) == (True, self.start_time) and self.boot_id == boot_id()


@functools.cache
def boot_id() -> str:
    """This boot's id (it cannot change while we run)."""
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _stat(pid: int) -> Optional[tuple[bool, int]]:
    """(running, start time) of `pid` from /proc/PID/stat, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0] not in _EXITED, int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def identify(pid: int) -> Optional[Identity]:
    """The identity of process `pid`, even a zombie (it started); None when there is none."""
    found = _stat(pid)
    return None if found is None else Identity(pid, found[1], boot_id())


def me() -> str:
    """This process's identity as text: who holds a claim or a record in a store shared by
    processes (dd.store.nodupe, dd.delivery.hooks)."""
    return str(identify(os.getpid()))


def running(identity: str) -> bool:
    """Whether the process whose identity `identity` (me()'s text) names still runs; text of
    another form (an older dd's 'pid:start time') names nobody that can be told from a stranger."""
    found = Identity.parse(identity)
    return found is not None and found.alive()


def write(path: Path, pid: Optional[int] = None) -> Optional[Identity]:
    """Record process `pid` (default: this one) in `path` atomically; None (nothing written)
    when there is no such process."""
    identity = identify(pid or os.getpid())
    if identity is None:
        return None
    atomic.replace(path, f"{identity.pid}\n{identity}\n")
    return identity


def read(path: Path) -> Union[Identity, int, None]:
    """What `path` records: an Identity, a bare pid (a pid file of the old format, or one
    another program wrote), or None (no file, or not a pid file)."""
    try:
        lines = path.read_text().split()
    except OSError:
        return None
    if len(lines) == 1 and lines[0].isdigit():
        return int(lines[0])
    identity = Identity.parse(lines[1]) if len(lines) == 2 else None
    return identity if identity and str(identity.pid) == lines[0] else None


def live(path: Path, legacy: Callable[[int], bool]) -> Optional[Identity]:
    """The live process `path` names, if it is still the process recorded; else None.

    A bare pid says too little to tell the process from a stranger: it is believed only
    when `legacy(pid)` says that process shows it is the one expected (its command line,
    its owner), and the caller must ask for evidence a stranger cannot have."""
    recorded = read(path)
    if isinstance(recorded, Identity):
        return recorded if recorded.alive() else None
    if recorded is None:
        return None
    identity = identify(recorded)
    # Alive after `legacy` looked: what it read was that very process.
    return identity if identity is not None and legacy(recorded) and identity.alive() else None


def stale(path: Path) -> bool:
    """Whether `path` says nothing about this boot: it is not a pid file, names a bare pid,
    or a process of another boot.  (A process of this boot that is gone is a death.)"""
    recorded = read(path)
    return not isinstance(recorded, Identity) or recorded.boot_id != boot_id()


def remove_own(path: Path) -> None:
    """Remove `path` if it names this process (an instance started again since keeps its own)."""
    if read(path) == identify(os.getpid()):
        path.unlink(missing_ok=True)


def send(identity: Identity, signum: int) -> bool:
    """Send `signum` to the process `identity` names if it is still that process; True if sent."""
    try:
        handle = os.pidfd_open(identity.pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd here (a kernel before 5.3, a sandbox): check, then signal by pid
        handle = None
    try:
        # Checked after the pidfd is open: it holds that process even if the pid is reused.
        if not identity.alive():
            return False
        if handle is None:
            os.kill(identity.pid, signum)
        else:
            signal.pidfd_send_signal(handle, signum)
        return True
    except ProcessLookupError:
        return False
    finally:
        if handle is not None:
            os.close(handle)


def owner(pid: int) -> Optional[int]:
    """The user id process `pid` runs as, or None when it is gone."""
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None


def command_line(pid: int) -> list[str]:
    """The arguments of process `pid` ([] when gone or unreadable)."""
    return _nul_list(f"/proc/{pid}/cmdline")


def environment(pid: int) -> dict[str, str]:
    """The environment process `pid` started with ({} when gone or not ours to read)."""
    return dict(item.split("=", 1) for item in _nul_list(f"/proc/{pid}/environ") if "=" in item)


def _nul_list(path: str) -> list[str]:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    return []
