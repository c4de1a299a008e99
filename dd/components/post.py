"""dd_post: announce files and trees — paths in, confirmed notices out."""
import os
import stat

from dd import flow
from dd.core import walk
from dd.core.errors import DDError
from dd.flow import Item
from dd.source import announce

NAME = "post"
DAEMON = False
# No queue to consume, nothing run beside it (dd.components.Component).
subscription = consumer = services = None
#: Notices per round of confirms: the first round is small so the first notices go out
#: at once, the later ones large so that waiting for confirms costs little.
FIRST_BATCH, BATCH = 50, 1000


class FileGatherer:
    """Walks the paths named on the command line and turns each file into a notice."""

    def __init__(self, cfg, arguments, *, deleted=False, renamed_from=None, progress=None):
        # One bar for the run: the bytes summed, of all the files to announce.
        self.tracker = progress.begin("announcing", _total(arguments)) if progress and not deleted else None
        self.announcer = announce.Announcer(cfg, self.tracker.advance if self.tracker else None)
        self.deleted = deleted
        self.refused = []           # (path, reason): what could not be announced
        self._pending = self._walk(arguments) if renamed_from is None else self._renamed(renamed_from, *arguments)
        self._batch_size = FIRST_BATCH

    def fetch(self, timeout):
        size, self._batch_size = self._batch_size, BATCH
        batch = []
        for item in self._pending:
            batch.append(item)
            if len(batch) >= size:
                break
        return batch or None

    def finish(self, items):
        pass

    def tick(self):
        pass

    def close(self):
        if self.tracker:
            self.tracker.end()

    def _walk(self, arguments):
        for argument in arguments:
            path = os.path.abspath(argument)
            if os.path.isdir(path) and not os.path.islink(path) and not self.deleted:
                for entry in walk.entries(path):
                    yield from self._item(entry)
            else:
                yield from self._item(path)

    def _renamed(self, old, new):
        """The notices of a rename: a directory's, one per file below it, each from its old name."""
        old, new = os.path.abspath(old), os.path.abspath(new)
        try:
            self.announcer.rel_path(old)
        except DDError as error:
            self._refuse(old, str(error))
            return
        if os.path.isdir(new) and not os.path.islink(new):
            for entry in walk.entries(new):
                yield from self._item(entry, renamed_from=os.path.join(old, os.path.relpath(entry, new)))
        else:
            yield from self._item(new, renamed_from=old)

    def _item(self, path, renamed_from=None):
        try:
            notices = self.announcer.notices(path, deleted=self.deleted, renamed_from=renamed_from)
        except (DDError, OSError) as error:
            self._refuse(path, str(error) if isinstance(error, DDError) else error.strerror)
            return
        for notice in notices:
            yield Item(notice, outgoing=None)

    def _refuse(self, path, reason):
        # Said once, by dd_post's summary of what was not announced (dd.admin.daemon.run_once).
        self.refused.append((path, reason))


def build(ctx):
    cfg = ctx.cfg
    cfg.require("post_broker", "post_base_url", "post_base_dir")
    gatherer = FileGatherer(cfg, ctx.arguments, deleted=ctx.deleted, renamed_from=ctx.renamed_from,
                            progress=ctx.progress)
    the_flow = flow.Flow(gatherer=gatherer, accept=flow.accept_lines(ctx),
                         # Nothing is acknowledged on a confirm: a batch's confirms come back
                         # while the next is walked and summed, and all of them before the end.
                         work=_announce, poster=flow.poster(ctx, confirm_later=True), stop=ctx.stop)
    the_flow.refused = gatherer.refused
    return the_flow


def _total(arguments):
    """Bytes of the files named and of those below the directories named, for the bar's time
    left: a walk of the tree before the one that reads it, made only for a person watching."""
    total = 0
    for argument in arguments:
        tree = os.path.isdir(argument) and not os.path.islink(argument)
        for path in walk.entries(argument) if tree else [argument]:
            try:
                st = os.lstat(path)
            except OSError:
                continue    # said when it is announced
            total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def _announce(item):
    item.outgoing = item.notice
