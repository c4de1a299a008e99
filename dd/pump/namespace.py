"""Where a notice may act on a pump: its source's own part of the pump's tree.

A pump keeps each source's files below a directory named for the source, as
Sarracenia's convention puts the source in the path: ``<source>/<path>``, and
private files below ``private/<readers>/<source>/<path>``.  A notice from source
S (a file, a delete, a link or a rename) acts only there: its paths and link
target are confined to that directory by dd.core.paths.Tree, so no notice of S can
create, change, move or remove an entry of another source, or reach private
data without naming its readers.  A relay prefixes ``<source>/`` to what a
source posts, unless the path starts with it already: a notice relayed from
another pump keeps its original source's namespace.
"""
import dataclasses
from typing import Optional

from dd.core import paths
from dd.pump import private
from dd.core.errors import PathError
from dd.core.notice import USER_NAME, Notice, Op

#: Names that cannot be a source's directory: the tree's own.
RESERVED = frozenset({private.PREFIX})


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a notice acts in a pump's tree: the namespace and the paths below it."""

    namespace: tuple
    rel_path: str
    old_rel_path: Optional[str]     # a rename's rename_from

    @property
    def private(self):
        return self.namespace[:1] == (private.PREFIX,)


def place(notice: Notice, rel_path: str, old_rel_path: Optional[str] = None) -> Place:
    """The Place of `notice` in a pump's tree, `rel_path` and `old_rel_path` being where
    it lands in a plain tree (dd.core.paths.localize); PathError when its source may not
    have one."""
    source = notice.source
    if not USER_NAME.fullmatch(source or "") or source in RESERVED:
        raise PathError(f"source {source!r} cannot own files on a pump: it is not a user name, or it "
                        f"is one of the tree's own names ({', '.join(sorted(RESERVED))})", rule="namespace")
    namespace = (source,)
    if notice.readers:
        namespace = (private.PREFIX, private.key(notice.readers), source)
    return Place(namespace, _below(source, rel_path),
                 _below(source, old_rel_path) if notice.op is Op.RENAME else None)


def _below(source, rel_path):
    """`rel_path` below its source's directory: without the source's name where it starts with it."""
    components = paths.split(rel_path)
    if components[0] == source and len(components) > 1:
        return "/".join(components[1:])
    return rel_path
