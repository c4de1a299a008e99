"""dd_post: announce files and trees — paths in, confirmed notices out."""
import logging
import os

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
log = logging.getLogger("dd.post")


class FileGatherer:
    """Walks the paths named on the command line and turns each file into a notice."""

    def __init__(self, cfg, arguments, *, deleted=False):
        self.announcer = announce.Announcer(cfg)
        self.deleted = deleted
        self.refused = []           # (path, reason): what could not be announced
        self._pending = self._walk(arguments)
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
        pass

    def _walk(self, arguments):
        for argument in arguments:
            path = os.path.abspath(argument)
            if os.path.isdir(path) and not os.path.islink(path) and not self.deleted:
                for entry in walk.entries(path):
                    yield from self._item(entry)
            else:
                yield from self._item(path)

    def _item(self, path):
        try:
            notices = self.announcer.notices(path, deleted=self.deleted)
        except (DDError, OSError) as error:
            reason = str(error) if isinstance(error, DDError) else error.strerror
            log.error("not announced: %s: %s", path, reason)
            self.refused.append((path, reason))
            return
        for notice in notices:
            yield Item(notice, outgoing=None)


def build(ctx):
    cfg = ctx.cfg
    cfg.require("post_broker", "post_base_url", "post_base_dir")
    gatherer = FileGatherer(cfg, ctx.arguments, deleted=ctx.deleted)
    the_flow = flow.Flow(gatherer=gatherer, accept=lambda item: _accept(cfg, item),
                         work=_announce, poster=flow.poster(ctx), stop=ctx.stop)
    the_flow.refused = gatherer.refused
    return the_flow


def _accept(cfg, item):
    return cfg.match(item.notice.rel_path) is not None


def _announce(item):
    item.outgoing = item.notice
