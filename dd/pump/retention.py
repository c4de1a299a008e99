"""Retention: a pump keeps data only `retention` long, then deletes it (no hoarding).

A sweep walks each directory tree a configuration delivers into and deletes
files and links that arrived (st_ctime: when the file was renamed into place)
longer ago than `retention`, at most LIMIT per sweep so a huge backlog is
worked off over several sweeps.  When the deletions are to be announced, a
batch of delete notices is confirmed by the broker before its files are
removed: a crash in between announces a deletion twice, never not at all.
Directories left empty are removed one sweep later, once nothing has entered
them for a whole interval, so a delivery never sees its directory vanish.
"""
import logging
import os
import threading
import time

from dd import flow
from dd.core import walk
from dd.core.notice import Notice, Op
from dd.core.notice import now as notice_now
from dd.flow import Item
from dd.pump import indexing
from dd.transfer import is_temporary_name

log = logging.getLogger("dd.retention")
#: Files deleted per sweep, at most.
LIMIT = 10000
#: Delete notices confirmed at once.
BATCH = 1000


def interval(retention):
    """How often to sweep: a tenth of the retention, between one second and ten minutes."""
    return min(max(retention / 10, 1.0), 600.0)


def trees(cfg):
    """The directories a configuration delivers into: each is swept separately."""
    roots = {m.directory for m in cfg.masks if m.accept}
    if cfg.accept_unmatched:
        roots.add(cfg.directory)
    return sorted({os.path.abspath(r) for r in roots})


class Sweeper:
    """Deletes what is older than `retention` seconds below `roots`; `announce(paths)`
    (optional) announces deletions and returns the paths confirmed."""

    def __init__(self, roots, retention, *, announce=None, limit=LIMIT, clock=time.time):
        self.roots = list(roots)
        self.retention = retention
        self.announce = announce
        self.limit = limit
        self.clock = clock
        self.grace = interval(retention)

    def sweep(self):
        """One pass: return the number of files deleted."""
        now = self.clock()
        expired, stale = [], []
        for root in self.roots:
            for path, temporary in self._expired(root, now - self.retention):
                (stale if temporary else expired).append(path)
                if len(expired) + len(stale) >= self.limit:
                    break
        deleted = _unlink(stale)
        for start in range(0, len(expired), BATCH):
            batch = expired[start:start + BATCH]
            deleted += _unlink(self.announce(batch) if self.announce else batch)
        for root in self.roots:
            self._prune(root, now - self.grace)
        if deleted:
            log.info("retention: deleted %d file(s) older than %gs", deleted, self.retention)
        return deleted

    def run(self, stop: threading.Event):
        """Sweep every interval until `stop` is set."""
        while not stop.wait(self.grace):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - the next sweep tries again; the flow goes on
                log.exception("retention sweep failed")

    @staticmethod
    def _expired(root, before):
        """(path, is a partial file) of each file or link that arrived before `before`."""
        for path in walk.entries(root):
            try:
                if os.lstat(path).st_ctime < before:
                    yield path, is_temporary_name(os.path.basename(path))
            except FileNotFoundError:
                continue

    @staticmethod
    def _prune(root, before):
        """Remove empty directories below root untouched since `before`."""
        for top, _, files in os.walk(root, topdown=False):
            if top == root or files:
                continue
            try:
                if os.stat(top).st_mtime < before:
                    os.rmdir(top)
            except OSError:
                continue  # something arrived, or it is already gone


def _unlink(paths):
    count = 0
    for path in paths:
        try:
            os.unlink(path)
            count += 1
        except FileNotFoundError:
            pass
        except OSError as error:
            log.error("retention: cannot delete %s: %s", path, error.strerror)
    return count


def announcer(ctx):
    """announce(paths) for a Sweeper: delete notices for `paths` on the configuration's
    post_exchange, returning the paths the broker confirmed."""
    cfg = ctx.cfg
    # Recorded in the log index like the relay's other announcements: their subscribers report on them.
    poster, _ = indexing.recording(ctx, flow.poster(ctx))
    base_dir = os.path.abspath(cfg.post_base_dir or cfg.directory)
    source = getattr(cfg.post_broker, "user", None) or ""

    def announce(paths):
        items, outside = [], []
        for path in paths:
            rel_path = os.path.relpath(path, base_dir)
            if rel_path.startswith(".."):
                outside.append(path)  # not served, so never announced: just deleted
                continue
            notice = Notice(pubtime=notice_now(), base_url=str(cfg.post_base_url), rel_path=rel_path,
                            op=Op.DELETE, source=source, from_cluster=cfg.cluster or "")
            items.append((path, Item(None, outgoing=notice)))
        unconfirmed = {id(i) for i in poster.post([i for _, i in items])}
        if unconfirmed:
            log.warning("retention: %d deletion(s) not confirmed by the broker; kept until the "
                        "next sweep", len(unconfirmed))
        return outside + [p for p, i in items if id(i) not in unconfirmed]
    return announce
