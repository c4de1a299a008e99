"""on_file: the command run for each file delivered, bounded in time, run at least once.

A Python function (python:..., dd.delivery.plugins) is run the same way, at least once,
without the process group and its timeout; it may also refuse the file, which is removed.

The command runs in a process group of its own.  Past on_file_timeout the whole
group (the command and whatever it started) gets SIGTERM, then SIGKILL
KILL_GRACE seconds later; a stop of the component does the same, since signals
meant for dd no longer reach a group of its own.  While it runs, the broker
connection is served every TICK_INTERVAL: a slow command never costs the
subscription its connection.

At least once: before a file is received, a record "on_file is due for this path
and checksum" is written to a store the configuration's instances share, synced
to disk, and it goes once the command has run.  A notice delivered again after a
crash between the rename into place and the command's end finds the file in place
(UNCHANGED) and the record of a process now gone: the command runs then.  The record of
a process still running is left to it, so that instances receiving parts of one
file side by side neither take away each other's records nor run the command
twice.  Records older than the store's ttl (retry_ttl) go.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import shlex
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Protocol

from dd.core.errors import DDError
from dd.flow import TICK_INTERVAL
from dd.core.notice import Notice, Op
from dd.core.options import format_duration
from dd.core.outcome import Code, Outcome
from dd.store import database, pidfile

log = logging.getLogger("dd.hooks")

#: Seconds between SIGTERM and SIGKILL for a command past its time or stopped.
KILL_GRACE = 5.0
#: Seconds between looks at whether a command's group has ended after SIGTERM.
GROUP_POLL = 0.1
#: Records older than the ttl are purged once per this many marks, so the store stays bounded.
PURGE_EVERY = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS due (
    path TEXT NOT NULL,        -- where the file is delivered
    checksum TEXT NOT NULL,    -- method:value announced: this content
    owner TEXT NOT NULL,       -- the process that recorded it
    at REAL NOT NULL,          -- when
    PRIMARY KEY (path, checksum, owner)
)"""


class HookFailed(DDError):
    """The command did not complete: it failed, could not run, or ran out of time."""

    rule = "on_file"


class HookStopped(HookFailed):
    """The component stopped while the command ran: it was ended, not finished."""


class HookRejected(DDError):
    """The hook refused the file (a Python function's verdict): it must not stay in place."""

    rule = "on_file"


class OnFile(Protocol):
    """What Hooked runs for each file in place: a command (Hook) or a function (plugins.FileCheck)."""

    def run(self, local_path: str, notice: Notice) -> None:
        """HookFailed when it did not complete, HookRejected when it refuses the file."""


class Hook:
    """One on_file command line, run for a file at a time, from any thread."""

    def __init__(self, command: str, *, timeout: float = 0, tick: Callable | None = None,
                 stop: threading.Event | None = None):
        self.command = command
        self.timeout = timeout      # seconds; 0: no limit
        self.tick = tick or (lambda: None)
        self.stop = stop or threading.Event()

    def run(self, local_path: str, notice: Notice) -> None:
        """Run the command for `local_path`; HookFailed when it did not complete with status 0."""
        env = dict(os.environ, **environment(local_path, notice))
        try:
            process = subprocess.Popen(shlex.split(self.command) + [local_path], env=env,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            raise HookFailed(f"on_file {self.command} cannot run for {local_path}: {error.strerror}",
                             fix="check the on_file command") from None
        status = self._wait(process)
        # Killed by a signal while dd stops: by dd, or by what stops dd and its children with it.
        stopping = self.stop.is_set() and (status is None or status < 0)
        if status is None:
            self._end(process)
        if stopping:
            raise HookStopped(f"on_file {self.command} for {local_path} was ended: dd is stopping",
                              fix="it runs again when the notice is tried again")
        if status is None:
            raise HookFailed(f"on_file {self.command} for {local_path} still ran after on_file_timeout "
                             f"({format_duration(self.timeout)}) and was killed with every process it "
                             "started", fix="make it finish sooner, or raise on_file_timeout")
        if status < 0:
            raise HookFailed(f"on_file {self.command} was killed by {_signal_name(-status)} for "
                             f"{local_path}", fix="dd signals it only past on_file_timeout or when "
                             "stopping: something else did")
        if status:
            raise HookFailed(f"on_file {self.command} exited {status} for {local_path}",
                             fix="its own messages, on its standard error, are in this log")

    def _wait(self, process):
        """The command's exit status, or None once it ran out of time or dd is stopping;
        the broker connection is served meanwhile."""
        deadline = time.monotonic() + self.timeout if self.timeout else None
        while True:
            try:
                return process.wait(TICK_INTERVAL)
            except subprocess.TimeoutExpired:
                self.tick()
            if self.stop.is_set() or (deadline is not None and time.monotonic() >= deadline):
                return None

    def _end(self, process):
        """SIGTERM to the command's group (it and what it started), SIGKILL to what is left
        of the group KILL_GRACE later; back once the group is gone."""
        _signal_group(process.pid, signal.SIGTERM)
        if not self._ended(process, KILL_GRACE):
            _signal_group(process.pid, signal.SIGKILL)
            # Bounded: a process stuck in the kernel, or a zombie nobody reaps, outlasts SIGKILL.
            self._ended(process, KILL_GRACE)
        process.wait()

    def _ended(self, process, seconds):
        """Whether the command's group is gone within `seconds`; the broker is served meanwhile."""
        deadline = time.monotonic() + seconds
        while _group_left(process):
            if time.monotonic() >= deadline:
                return False
            time.sleep(GROUP_POLL)
            self.tick()
        return True


def _group_left(process):
    """Whether a process of the command's group is left, once the command itself is reaped."""
    process.poll()
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass    # a member that changed user: still there
    return True


def _signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _signal_group(pgid, signum):
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def environment(local_path: str, notice: Notice) -> dict:
    """The notice, as the DD_* variables a command finds in its environment."""
    return {
        "DD_PATH": local_path, "DD_REL_PATH": notice.rel_path, "DD_URL": notice.url,
        "DD_BASE_URL": notice.base_url, "DD_SIZE": str(notice.size), "DD_SOURCE": notice.source,
        "DD_CHECKSUM": f"{notice.checksum.method}:{notice.checksum.value}",
        "DD_PUBTIME": notice.pubtime.isoformat(), "DD_OP": notice.op.value,
    }


class DueStore:
    """Which files' commands are due, in one SQLite file shared by a configuration's instances.

    A record is a row per process (`owner`, a dd.store.pidfile.me()) that made it: while
    its process runs, the command is in its hands; once its process is gone, whoever
    finds the file in place owes the command."""

    def __init__(self, path, ttl: float, owner: str | None = None):
        self.path = os.fspath(path)
        self.ttl = ttl
        self.owner = owner or pidfile.me()
        # Removals are not synced: one a crash loses costs one more run of the command, no less.
        self._db = database.open_shared(self.path, _SCHEMA)
        self._lock = threading.Lock()
        self._marks = 0
        self.purge()

    def mark(self, path: str, checksum: str, now: float | None = None) -> bool:
        """Record, durably, that the command is due for this content at `path`.  True when
        this process owes it already: a delivery of this content by a process now gone,
        or an earlier one by this process, did not see its command complete.  The records
        of processes gone become this one's."""
        now = time.time() if now is None else now
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")    # on disk before the file is renamed into place
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                owners = [owner for (owner,) in self._db.execute(
                    "SELECT owner FROM due WHERE path = ? AND checksum = ?", (path, checksum))]
                gone = [owner for owner in owners if owner != self.owner and not pidfile.running(owner)]
                self._db.executemany("DELETE FROM due WHERE path = ? AND checksum = ? AND owner = ?",
                                     [(path, checksum, owner) for owner in gone])
                self._db.execute("INSERT OR REPLACE INTO due (path, checksum, owner, at) VALUES (?, ?, ?, ?)",
                                 (path, checksum, self.owner, now))
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._marks += 1
        if self._marks % PURGE_EVERY == 0:
            self.purge(now)
        return bool(gone) or self.owner in owners

    def done(self, path: str, checksum: str) -> None:
        """The command has run for this content: nobody owes it any more."""
        self._execute("DELETE FROM due WHERE path = ? AND checksum = ?", (path, checksum))

    def drop(self, path: str, checksum: str) -> None:
        """This content is not in place: this process owes no command for it."""
        self._execute("DELETE FROM due WHERE path = ? AND checksum = ? AND owner = ?",
                      (path, checksum, self.owner))

    def purge(self, now: float | None = None) -> None:
        """Forget records older than ttl."""
        now = time.time() if now is None else now
        self._execute("DELETE FROM due WHERE at <= ?", (now - self.ttl,))

    def _execute(self, statement, values):
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(statement, values)

    def __len__(self):
        with self._lock:
            return self._db.execute("SELECT count(*) FROM due").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Hooked:
    """A receiver (dd.delivery.receive.Receiver) whose writes and renames run the hook, at least once.

    `retry`: a command that did not complete fails the delivery (FAILED [on_file]), so that
    the notice is kept for retry and the command runs when it is retried; otherwise it is
    logged and the delivery stands.  A stop always fails it: it runs again after a restart."""

    def __init__(self, receiver, hook: OnFile, due: DueStore, *, retry: bool = False):
        self.receiver = receiver
        self.hook = hook
        self.due = due
        self.retry = retry

    def receive(self, notice, tree, rel_path, old_rel_path=None) -> Outcome:
        if notice.op not in (Op.WRITE, Op.RENAME):
            return self.receiver.receive(notice, tree, rel_path, old_rel_path)
        key = (os.path.join(os.path.abspath(tree.root), rel_path),
               f"{notice.checksum.method}:{notice.checksum.value}")
        try:
            owed = self.due.mark(*key)
        except sqlite3.Error as error:
            # Without the record the command could be lost: nothing is received, the notice is kept.
            return Outcome(Code.FAILED, f"cannot record that on_file is due in {self.due.path}: {error} "
                                        "(check the disk of dd's state directory)", "filesystem",
                           local_path=key[0])
        outcome = self.receiver.receive(notice, tree, rel_path, old_rel_path)
        # UNCHANGED with the checksum: the whole file verified in place (a part's own says no such thing).
        in_place = outcome.code == Code.UNCHANGED and outcome.checksum == notice.checksum
        if outcome.code == Code.DELIVERED or (owed and in_place):
            return self._run(outcome, notice, key)
        self.due.drop(*key)
        return outcome

    def _run(self, outcome, notice, key):
        if outcome.code == Code.UNCHANGED:
            # Delivered before a crash or a failed command, and complete only now: announced now.
            outcome = dataclasses.replace(outcome, code=Code.DELIVERED,
                                          message="in place; on_file had not completed, ran now")
        try:
            self.hook.run(outcome.local_path, notice)
        except HookRejected as error:
            outcome = self._removed(outcome, error)
            if outcome.code == Code.DENIED:     # else still owed: it runs again on retry
                self.due.done(*key)
            return outcome
        except HookFailed as error:
            if self.retry or isinstance(error, HookStopped):
                return dataclasses.replace(outcome, code=Code.FAILED, message=str(error), rule=error.rule)
            log.error("%s", error)
        self.due.done(*key)
        return outcome

    @staticmethod
    def _removed(outcome, error):
        """A refused file goes, so that nothing downstream takes it for a delivery; refused, not
        failed: the same file would be refused again."""
        try:
            os.unlink(outcome.local_path)
        except FileNotFoundError:
            pass
        except OSError as problem:
            return dataclasses.replace(outcome, code=Code.FAILED, rule=error.rule,
                                       message=f"{error}; cannot remove it: {problem.strerror}")
        return dataclasses.replace(outcome, code=Code.DENIED, message=f"{error}; removed", rule=error.rule)

    def close(self) -> None:
        self.due.close()
        self.receiver.close()
