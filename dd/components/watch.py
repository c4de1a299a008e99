"""dd_watch: directories watched, each file announced once it is complete.

Filesystem events (dd.source.watching) are coalesced per path over a few
milliseconds and turned into notices by the same Announcer as dd_post.  What
was announced, path → (size, mtime_ns), is kept in a small state file, so that
a restart announces only what changed while the watcher was down, and an
event that changed nothing (a second close, a rescan) announces nothing.
"""
import logging
import os
import re
import signal
import stat
import threading
import time
from typing import NamedTuple, Optional

from dd import flow
from dd.core import walk
from dd.core.errors import ConfigError, DDError
from dd.flow import Item
from dd.source import announce, watching
from dd.store import metrics

NAME = "watch"
DAEMON = True
# No queue to consume, nothing run beside the instances (dd.components.Component).
subscription = consumer = services = None
#: Names writers use while writing, unless an accept line names them: dot files (and what
#: is below dot directories) and *.tmp.
TEMPORARY = re.compile(r"(?:.*/)?(?:\.[^/]*(?:/.*)?|[^/]*\.tmp)")
SETTLE = 0.005          # seconds an event waits for the rest of its burst
BATCH = 1000            # notices per round of confirms
SAVE_EVERY = 5.0        # seconds between writes of the state file
# What is to be done for a path: announce its content (after a close: complete; after a
# create: complete unless someone has it open for writing), its deletion, or its renaming.
WRITE, CREATED, DELETE, RENAME = "write", "created", "delete", "rename"
log = logging.getLogger("dd.watch")


class Announcing(NamedTuple):
    """What finishing an item records in the state file: a path announced with its key
    (None: as deleted), and the old name of a rename, which goes."""

    rel_path: str
    key: Optional[list[int]]
    gone: Optional[str]


class WatchGatherer:
    """Gathers notices from filesystem events below cfg.path, and from a rescan at start."""

    def __init__(self, cfg, state):
        self.cfg = cfg
        self.state = state
        self.announcer = announce.Announcer(cfg)
        self.directories = [os.path.abspath(p) for p in cfg.path]
        self._prefix = os.path.join(self.announcer.base_dir, "")
        self.changes = watching.Changes(self.directories)
        self.announced = metrics.read(state.announced_file()) or {}   # rel_path -> [size, mtime_ns]
        self._todo = {}                             # path -> (what, renamed from); insertion ordered
        self._in_flight = {}                        # id(item) -> (path, what, renamed from)
        self._started = False
        self._dirty, self._saved = False, time.monotonic()

    # -- the gatherer interface ---------------------------------------------

    def fetch(self, timeout):
        if not self._started:
            self._start()
        # Items the poster could not get confirmed come back: their paths are looked at again.
        for path, what, source in self._in_flight.values():
            self._want(path, what, source)
        self._in_flight.clear()
        if not self._todo:
            self._take(self.changes.take(timeout, SETTLE))
        elif len(self._todo) < BATCH:
            self._take(self.changes.take(0, 0))
        if not self._todo and not self.changes.alive():   # what was seen is announced first
            raise DDError(f"no longer watching {', '.join(self.directories)}: {self.changes.why_not}",
                          fix="recreate what is gone and start dd_watch again")
        items = []
        while self._todo and len(items) < BATCH:
            path = next(iter(self._todo))
            what, source = self._todo.pop(path)
            for item in self._items(path, what, source):
                self._in_flight[id(item)] = (path, what, source)
                items.append(item)
        self._save_now_and_then()
        return items

    def finish(self, items):
        for item in items:
            self._in_flight.pop(id(item), None)
            rel_path, key, gone = item.receipt     # an Announcing
            if gone is not None:
                self.announced.pop(gone, None)
            if key is None:
                self.announced.pop(rel_path, None)
            else:
                self.announced[rel_path] = key
        if items:
            self._dirty = True
            log.info("announced %d change(s)", len(items))

    def tick(self):
        pass

    def close(self):
        self.changes.stop()
        self._save()

    # -- events → things to do ----------------------------------------------

    def _start(self):
        self._started = True
        for directory in self.directories:
            if not os.path.isdir(directory):
                raise ConfigError(f"path {directory} is not a directory", fix="create it, or correct the path line")
            if self._rel(os.path.join(directory, "")) is None:
                raise ConfigError(f"path {directory} is not below post_base_dir {self.announcer.base_dir}",
                                  fix="set post_base_dir to a directory above it")
        # Watch first, then rescan: a change during the rescan is seen by one or both,
        # and the second sighting announces nothing.
        self.changes.start()
        self._rescan()
        log.info("watching %s: %d change(s) since the last run", ", ".join(self.directories), len(self._todo))

    def _rescan(self):
        """Want what differs from what was announced: new or changed files, and deletions."""
        seen = set()
        for directory in self.directories:
            for path in walk.entries(directory):
                seen.add(path)
                if self._wanted(path) and self._changed(path):
                    self._want(path, CREATED)
        base = self.announcer.base_dir
        for rel_path in list(self.announced):
            path = os.path.join(base, rel_path)
            if path not in seen and self._below(path):
                self._want(path, DELETE)

    def _take(self, events):
        for kind, path, dest in events:
            if kind == watching.CLOSED:
                self._want(path, WRITE)
            elif kind == watching.CREATED:
                if self._todo.get(path, (None,))[0] != WRITE:
                    self._want(path, CREATED)
            elif kind == watching.DELETED:
                self._want(path, DELETE)
            elif kind == watching.DIR_CREATED:
                # Files written before the new directory's watch was in place have no events.
                for found in walk.entries(path):
                    self._want(found, CREATED)
            elif kind == watching.DIR_DELETED:
                prefix = self._rel(path)
                if prefix is not None:
                    for rel_path in [r for r in self.announced if r.startswith(prefix + "/")]:
                        self._want(os.path.join(self.announcer.base_dir, rel_path), DELETE)
            elif kind == watching.MOVED:
                self._moved(path, dest)
            elif kind == watching.OVERFLOW:
                self._rescan()

    def _moved(self, src, dest):
        pending, source = self._todo.pop(src, (None, None))
        if source is None and self._rel(src) in self.announced:
            source = src
        # The destination is looked at as a new file: its writer may still have it open.
        if not self._wanted(dest) or source is None:
            if source is not None:
                self._want(source, DELETE)
            self._want(dest, CREATED)
        elif pending in (WRITE, CREATED, DELETE):
            # Its content changed since it was announced: the old name goes, the new one is fetched.
            self._want(source, DELETE)
            self._want(dest, CREATED)
        else:
            self._want(dest, RENAME, source)

    def _want(self, path, what, source=None):
        _, renamed_from = self._todo.pop(path, (None, None))   # the latest event decides, and is done last
        if renamed_from is not None and renamed_from != source:
            # Renamed, then deleted, written again or replaced before it was announced: the old
            # name still goes.
            self._want(renamed_from, DELETE)
        self._todo[path] = (what, source)

    # -- things to do → items -----------------------------------------------

    def _items(self, path, what, source):
        rel_path = self._rel(path)
        if rel_path is None or not self._wanted(path):
            return []
        st = _lstat(path) if what != DELETE else None
        if st is None:
            what = DELETE
        if what == DELETE:
            if rel_path not in self.announced:
                return []
            return self._announce(path, rel_path, None, deleted=True)
        if stat.S_ISDIR(st.st_mode) or (stat.S_ISLNK(st.st_mode) and os.path.isdir(path)):
            return []
        key = _key_of(st)
        if what == RENAME and self._rel(source) in self.announced:
            if watching.being_written(path):
                # Its close will announce the new name; the old one goes now.
                return self._announce(source, self._rel(source), None, deleted=True)
            return self._announce(path, rel_path, key, renamed_from=source, st=st)
        if self.announced.get(rel_path) == key:
            return []
        if what == CREATED and watching.being_written(path):
            return []   # its close will be seen
        return self._announce(path, rel_path, key, st=st)

    def _announce(self, path, rel_path, key, **how):
        source = how.get("renamed_from")
        try:
            notices = self.announcer.notices(path, **how)
        except FileNotFoundError:
            return []   # gone meanwhile: its deletion is the next event
        except (DDError, OSError) as error:
            log.error("not announced: %s: %s", path, error if isinstance(error, DDError) else error.strerror)
            # Renamed to a name that cannot be announced: the old name is gone all the same.
            return self._announce(source, self._rel(source), None, deleted=True) if source else []
        if key is not None and _key(path) != key:
            # Written to while it was summed: the writer's close comes next; an old name goes now.
            return self._announce(source, self._rel(source), None, deleted=True) if source else []
        gone = self._rel(source) if source else None
        return [Item(notice, receipt=Announcing(rel_path, key, gone)) for notice in notices]

    # -- helpers ---------------------------------------------------------------

    def _rel(self, path):
        # Paths here are absolute and normal (events name watched directory + names); the
        # Announcer judges them again, symbolic links included, before anything is announced.
        return path[len(self._prefix):] if path.startswith(self._prefix) else None

    def _wanted(self, path):
        rel_path = self._rel(path)
        if rel_path is None or self.cfg.match(rel_path) is None:
            return False
        return not TEMPORARY.fullmatch(rel_path) or any(
            m.accept and m.pattern.fullmatch(rel_path) for m in self.cfg.masks)

    def _changed(self, path):
        key = _key(path)
        return key is not None and self.announced.get(self._rel(path)) != key

    def _below(self, path):
        return any(path.startswith(d + os.sep) for d in self.directories)

    def _save_now_and_then(self):
        if self._dirty and time.monotonic() - self._saved >= SAVE_EVERY:
            self._save()

    def _save(self):
        if self._dirty:
            metrics.write(self.state.announced_file(), self.announced)
            self._dirty, self._saved = False, time.monotonic()


def _lstat(path):
    """os.lstat(path), or None when it is gone."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _key_of(st):
    """What tells one content of a file from another: [size, mtime_ns]; None when it is gone."""
    return None if st is None else [st.st_size, st.st_mtime_ns]


def _key(path):
    return _key_of(_lstat(path))


def build(ctx):
    cfg = ctx.cfg
    cfg.require("post_broker", "post_base_url", "post_base_dir", "path")
    if threading.current_thread() is threading.main_thread():
        # being_written() takes a lease for an instant; a writer opening the file in that
        # instant makes the kernel signal us, which must not end the process.
        signal.signal(signal.SIGIO, signal.SIG_IGN)
    gatherer = WatchGatherer(cfg, ctx.state)
    return flow.Flow(gatherer=gatherer, accept=lambda item: True, work=_announce, poster=flow.poster(ctx),
                     stop=ctx.stop)


def _announce(item):
    item.outgoing = item.notice
