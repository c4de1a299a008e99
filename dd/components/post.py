"""dd_post: announce files and trees — paths in, confirmed notices out."""
import logging
import os

from dd import checksum, flow
from dd.errors import DDError, PathError
from dd.flow import Item
from dd.notice import Checksum, Notice, Op, from_timestamp, now

NAME = "post"
DAEMON = False
#: Notices per round of confirms: the first round is small so the first notices go out
#: at once, the later ones large so that waiting for confirms costs little.
FIRST_BATCH, BATCH = 50, 1000
log = logging.getLogger("dd.post")


class FileGatherer:
    """Walks the paths named on the command line and turns each file into a notice."""

    def __init__(self, cfg, arguments, *, deleted=False):
        self.cfg = cfg
        self.base_dir = os.path.abspath(cfg.post_base_dir)
        self.real_base = os.path.realpath(self.base_dir)
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
                for top, directories, files in os.walk(path):
                    directories.sort()
                    for name in sorted(files) + [d for d in directories if os.path.islink(os.path.join(top, d))]:
                        yield from self._item(os.path.join(top, name))
            else:
                yield from self._item(path)

    def _item(self, path):
        try:
            yield Item(self._notice(path), outgoing=None)
        except (DDError, OSError) as error:
            reason = str(error) if isinstance(error, DDError) else error.strerror
            log.error("not announced: %s: %s", path, reason)
            self.refused.append((path, reason))

    def _notice(self, path):
        rel_path = os.path.relpath(path, self.base_dir)
        if rel_path in (".", "..") or rel_path.startswith("../"):
            raise PathError(f"{path} is outside post_base_dir {self.base_dir}",
                            fix="set post_base_dir to a directory above it")
        parent = os.path.realpath(os.path.dirname(path))
        if os.path.commonpath([parent, self.real_base]) != self.real_base:
            raise PathError(f"{path} is reached through a symlink that leaves post_base_dir {self.base_dir}")
        cfg = self.cfg
        common = dict(pubtime=now(), base_url=str(cfg.post_base_url), rel_path=rel_path, source=cfg.source or "",
                      from_cluster=cfg.cluster or "", to_clusters=list(cfg.to_clusters or ()),
                      readers=list(cfg.readers or ()))
        if self.deleted:
            return Notice(op=Op.DELETE, **common)
        st = os.lstat(path)
        if os.path.islink(path):
            return Notice(op=Op.LINK, link_target=os.readlink(path), mtime=from_timestamp(st.st_mtime),
                          **common)
        if not os.path.isfile(path):
            raise PathError(f"{path} is not a regular file")
        method = cfg.checksum
        value = checksum.of_name(rel_path) if method == "name" else checksum.of_file(path, method)
        return Notice(op=Op.WRITE, size=st.st_size, checksum=Checksum(method, value),
                      mtime=from_timestamp(st.st_mtime), atime=from_timestamp(st.st_atime),
                      mode=st.st_mode & 0o7777, **common)


def build(ctx, *, deleted=False):
    cfg = ctx.cfg
    cfg.require("post_broker", "post_base_url", "post_base_dir")
    gatherer = FileGatherer(cfg, ctx.arguments, deleted=deleted)
    the_flow = flow.Flow(gatherer=gatherer, accept=lambda item: _accept(cfg, item),
                         work=_announce, poster=flow.poster(ctx), stop=ctx.stop)
    the_flow.refused = gatherer.refused
    return the_flow


def _accept(cfg, item):
    return cfg.match(item.notice.rel_path) is not None


def _announce(item):
    item.outgoing = item.notice
