"""Changes below some directories, as the kernel reports them (watchdog: inotify on Linux).

Only events that mean "this name now has complete content, or is gone" are
asked of the kernel: a write is reported when the writer closes the file, not
at each write(), so a file being written is never reported half-written.
Events are handed over in arrival order, in batches, to one consumer thread.
When the kernel's event queue overflows, events are lost: an OVERFLOW event
then tells the consumer to compare the tree with what it knows.
"""
import errno
import fcntl
import logging
import os
import threading
import time

from watchdog import events
from watchdog.observers import Observer

log = logging.getLogger("dd.watching")

# What each watchdog event means to a watcher.
CLOSED, CREATED, DELETED, MOVED, DIR_CREATED, DIR_DELETED, OVERFLOW = (
    "closed", "created", "deleted", "moved", "dir-created", "dir-deleted", "overflow")
#: watchdog reports a kernel queue overflow only in this logger's messages.
_INOTIFY_LOGGER = logging.getLogger("watchdog.observers.inotify_c")
_KINDS = {
    events.FileClosedEvent: CLOSED,
    events.FileCreatedEvent: CREATED,
    events.FileDeletedEvent: DELETED,
    events.FileMovedEvent: MOVED,
    events.DirCreatedEvent: DIR_CREATED,
    events.DirDeletedEvent: DIR_DELETED,
    events.DirMovedEvent: MOVED,
}


class Changes(events.FileSystemEventHandler):
    """Collects (kind, path, dest_path) events below `directories`, recursively."""

    def __init__(self, directories):
        self.directories = [os.path.abspath(d) for d in directories]
        self._events = []
        self._arrived = threading.Condition()
        self._observer = None

    def filter(self, record):
        """As a logging filter on watchdog's inotify logger: notices overflows."""
        if "overflow" in record.getMessage():
            log.warning("the kernel dropped filesystem events; rescanning the watched directories")
            self._add(OVERFLOW, None, None)
        return True

    def start(self):
        _INOTIFY_LOGGER.addFilter(self)
        self._observer = Observer()
        for directory in self.directories:
            try:
                self._observer.schedule(self, directory, recursive=True, event_filter=list(_KINDS))
            except TypeError:
                # watchdog before 4 (Debian 12 ships 2.2) asks the kernel for every event;
                # dispatch keeps the same few.
                self._observer.schedule(self, directory, recursive=True)
        self._observer.start()

    def dispatch(self, event):
        kind = _KINDS.get(type(event))
        if kind is None:
            return
        if kind is MOVED and isinstance(event, events.DirMovedEvent):
            # The files below arrive as moves of their own; the directory itself is nothing to post.
            return
        self._add(kind, os.fsdecode(event.src_path), os.fsdecode(event.dest_path) if kind is MOVED else None)

    def _add(self, kind, path, dest):
        with self._arrived:
            self._events.append((kind, path, dest))
            self._arrived.notify()

    def take(self, timeout, settle):
        """The events so far, waiting up to `timeout` for a first one, then `settle` seconds for
        the rest of a burst (a writer's create and close, a rename's two halves)."""
        with self._arrived:
            if not self._events:
                self._arrived.wait(timeout)
            if not self._events:
                return []
        time.sleep(settle)
        with self._arrived:
            taken, self._events = self._events, []
        return taken

    def alive(self):
        """Whether every directory is still watched (watchdog stops watching a removed one)."""
        return self._observer is not None and all(e.is_alive() for e in self._observer.emitters)

    def stop(self):
        _INOTIFY_LOGGER.removeFilter(self)
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)


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
