"""Changes below some directories, as the kernel reports them (watchdog: inotify on Linux).

Only events that mean "this name now has complete content, or is gone" are
asked of the kernel: a write is reported when the writer closes the file, not
at each write(), so a file being written is never reported half-written.
Events are handed over in arrival order, in batches, to one consumer thread.
When the kernel's event queue overflows, events are lost: an OVERFLOW event
then tells the consumer to compare the tree with what it knows.

watchdog decodes events on three threads of its own.  In the announcing process
they would hold the interpreter lock a third of the time, and the flow, which
gives it up at every system call, would wait for it each time: they run in a
helper process instead, which sends what it saw through a pipe, a batch at a
time.  The helper ends when the pipe closes, whichever way its parent ended.
"""
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection

from watchdog import events
from watchdog import version as watchdog_version
from watchdog.observers import Observer

from dd.core.errors import DDError
from dd.source import inotify

log = logging.getLogger("dd.watching")

# What each watchdog event means to a watcher.
CLOSED, CREATED, DELETED, MOVED, DIR_CREATED, DIR_DELETED, OVERFLOW = (
    "closed", "created", "deleted", "moved", "dir-created", "dir-deleted", "overflow")
#: watchdog 7 reports a kernel queue overflow only in this logger's messages.
_INOTIFY_LOGGER = "watchdog.observers.inotify_c"
_KINDS = {
    events.FileClosedEvent: CLOSED,
    events.FileCreatedEvent: CREATED,
    events.FileDeletedEvent: DELETED,
    events.FileMovedEvent: MOVED,
    events.DirCreatedEvent: DIR_CREATED,
    events.DirDeletedEvent: DIR_DELETED,
    events.DirMovedEvent: MOVED,
}
START_TIMEOUT = 60.0    # seconds the helper may take to start and put its watches in place
# What the helper sends besides batches of events (lists): (what, text, fix) tuples.
_READY, _FAILED, _UNWATCHED = "ready", "failed", "unwatched"
_FIX = "check the path lines, and the inotify limits (fs.inotify.max_user_watches)"


class Changes:
    """Collects (kind, path, dest_path) events below `directories`, recursively."""

    def __init__(self, directories):
        self.directories = [os.path.abspath(d) for d in directories]
        self._events = []
        self._process = None
        self._pipe = None
        self._watching = False
        self.why_not = None      # once not alive: what ended the watching

    def start(self):
        """Watch; once this returns, every later change is reported."""
        ours, theirs = socket.socketpair()
        env = dict(os.environ)
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        if os.path.basename(package_root) not in ("site-packages", "dist-packages"):
            # Imported from a source tree (a checkout, an editable install): the helper
            # imports this very dd, not another one installed.
            env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        with theirs:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "dd.source.watching", str(theirs.fileno()), *self.directories],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env)
        self._pipe = Connection(ours.detach())
        watched = ", ".join(self.directories)
        try:
            if not self._pipe.poll(START_TIMEOUT):
                raise DDError(f"the process watching {watched} did not start within {START_TIMEOUT:g} s")
            what, text, fix = self._pipe.recv()
        except (EOFError, OSError):
            what, text, fix = _FAILED, f"the process watching {watched} ended before it watched", _FIX
        except DDError:
            self.stop()
            raise
        if what != _READY:
            self.stop()
            raise DDError(text, fix=fix)
        self._watching = True

    def take(self, timeout, settle):
        """The events so far, waiting up to `timeout` for a first one, then `settle` seconds for
        the rest of a burst (a writer's create and close, a rename's two halves)."""
        if not self._events and not self._receive(timeout):
            return []
        time.sleep(settle)
        self._receive(0)
        taken, self._events = self._events, []
        return taken

    def _receive(self, timeout):
        """Read what the helper sent, waiting up to `timeout` for it; whether events came."""
        got = False
        try:
            while self._pipe is not None and self._pipe.poll(timeout):
                message = self._pipe.recv()
                timeout = 0
                if isinstance(message, list):
                    for event in message:
                        if event[0] == OVERFLOW:
                            log.warning("the kernel dropped filesystem events; rescanning the watched directories")
                    self._events.extend(message)
                    got = True
                elif message[0] == _UNWATCHED:
                    self._stopped("was a watched directory removed?")
        except (EOFError, OSError):
            self._stopped("the process reading its events ended")
        return got

    def _stopped(self, why):
        if self._watching:
            self._watching, self.why_not = False, why

    @property
    def helper_pid(self):
        """The process id of the helper reading the kernel's events, once started."""
        return self._process.pid if self._process is not None else None

    def alive(self):
        """Whether every directory is still watched (watchdog stops watching a removed one);
        when not, why_not says why."""
        return self._watching

    def stop(self):
        if self._pipe is not None:
            self._pipe.close()     # the helper ends when its pipe closes
            self._pipe = None
        if self._process is not None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        self._watching = False


class _Collector(events.FileSystemEventHandler):
    """In the helper: watchdog's events (and overflows, from its log) as (kind, path, dest)."""

    def __init__(self):
        self._events = []
        self._arrived = threading.Condition()

    def filter(self, record):
        """As a logging filter on watchdog's inotify logger: notices overflows."""
        if "overflow" in record.getMessage():
            self.overflowed()
        return True

    def overflowed(self):
        self._add((OVERFLOW, None, None))

    def dispatch(self, event):
        kind = _KINDS.get(type(event))
        if kind is None:
            return
        if kind is MOVED and isinstance(event, events.DirMovedEvent):
            # The files below arrive as moves of their own; the directory itself is nothing to post.
            return
        self._add((kind, os.fsdecode(event.src_path), os.fsdecode(event.dest_path) if kind is MOVED else None))

    def _add(self, event):
        with self._arrived:
            self._events.append(event)
            self._arrived.notify()

    def take(self, timeout):
        """The events so far, waiting up to `timeout` for a first one."""
        with self._arrived:
            if not self._events:
                self._arrived.wait(timeout)
            taken, self._events = self._events, []
        return taken


def _watch(directories, pipe):
    """The helper process: watch `directories`, send what happens through `pipe` until it closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)    # its parent decides when watching ends
    collector = _Collector()
    # watchdog's messages are read, not printed: the parent says what they mean in its log.
    logging.getLogger().addHandler(logging.NullHandler())
    logging.getLogger(_INOTIFY_LOGGER).addFilter(collector)
    _spot_dropped_overflows(collector)
    observer = Observer()
    try:
        for directory in directories:
            try:
                observer.schedule(collector, directory, recursive=True, event_filter=list(_KINDS))
            except TypeError:
                # watchdog before 4 (Debian 12 ships 2.2) asks the kernel for every event;
                # dispatch keeps the same few.
                observer.schedule(collector, directory, recursive=True)
        observer.start()
        short = inotify.shortage(directories)
    except OSError as error:
        short = inotify.shortage(directories, error) or (
            f"cannot watch {', '.join(directories)}: {error.strerror or error}", _FIX)
    if short:
        pipe.send((_FAILED, *short))
        observer.stop()
        return
    try:
        pipe.send((_READY, "", ""))
        # A batch is what arrived while the previous one was sent: one write for many events
        # when they come fast, one each when they come slowly.
        while not pipe.poll():       # the parent never writes: readable means it closed the pipe
            batch = collector.take(0.2)
            if batch:
                pipe.send(batch)
            if not all(emitter.is_alive() for emitter in observer.emitters):
                # A directory is gone: what its watch saw last is sent first.
                _settle(observer)
                pipe.send(collector.take(0))
                pipe.send((_UNWATCHED, "", ""))
                break
    except (BrokenPipeError, ConnectionResetError):
        pass    # the parent is gone
    finally:
        observer.stop()
        observer.join(timeout=5)


def _spot_dropped_overflows(collector):
    """watchdog before 7 (Debian 12 ships 2.2) skips the kernel's overflow event unseen, as
    one for no watch (its issue #654): see it as watchdog parses the kernel's buffer."""
    if watchdog_version.VERSION_MAJOR >= 7:
        return      # reported in its log, which the collector reads
    from watchdog.observers import inotify_c
    parse = inotify_c.Inotify._parse_event_buffer
    overflow = inotify_c.InotifyConstants.IN_Q_OVERFLOW

    def parse_spotting_overflows(event_buffer):
        for wd, mask, cookie, name in parse(event_buffer):
            if wd == -1 and mask & overflow:
                collector.overflowed()
            yield wd, mask, cookie, name

    inotify_c.Inotify._parse_event_buffer = staticmethod(parse_spotting_overflows)


def _settle(observer, patience=1.0):
    """Wait (a while) until the observer has dispatched every event its emitters queued."""
    deadline = time.monotonic() + patience
    while not observer.event_queue.empty() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.01)    # the last one taken may be in dispatch still


def being_written(path):
    """Whether some process has `path` open for writing: Linux refuses a read lease then.
    False when that cannot be told (a file of another user, leases disabled)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    except OSError as error:
        return error.errno == errno.EAGAIN
    finally:
        os.close(fd)


if __name__ == "__main__":
    # The helper: python -m dd.source.watching PIPE_FD DIRECTORY...
    _watch(sys.argv[2:], Connection(int(sys.argv[1])))
