"""The notice: "this file is available at this URL, with this size and checksum".

A Notice is the one in-memory form every wire format decodes to and encodes
from.  `validate` is the single gate a notice passes before anything acts on
it: wire codecs only translate, this module judges.  It knows nothing of the
broker, transfers or the filesystem (paths are judged again, against a real
directory, by `dd.core.paths`).
"""
import dataclasses
import datetime
import enum
import re
import urllib.parse
from collections.abc import Collection
from typing import Any, Optional

from dd.core import checksum
from dd.core.errors import NoticeError

# Names are refused, not cleaned, when they carry C0/C1 control characters or
# DEL: they break logs, terminals and shell hooks.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: What a user name may be: it goes into broker permission patterns, exchange names and
#: the data server's paths, so nothing that has a meaning there.
USER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")

#: Largest size a notice may claim (1 EiB): anything above is a forged number.
MAX_FILE_SIZE = 1 << 60


class Op(str, enum.Enum):
    """What happened to the file at rel_path."""

    WRITE = "write"      # created or modified: fetch its content
    DELETE = "delete"    # removed at the source
    LINK = "link"        # a symbolic link to link_target
    RENAME = "rename"    # content now at rel_path, formerly at rename_from


@dataclasses.dataclass(frozen=True)
class Checksum:
    method: str
    value: str


@dataclasses.dataclass(frozen=True)
class Part:
    """Which segment of a file a notice announces; arithmetic lives in dd.core.parts"""

    block_size: int
    block_count: int
    remainder: int
    block_number: int
    checksum: Checksum


@dataclasses.dataclass
class Notice:
    pubtime: datetime.datetime          # UTC, microseconds
    base_url: str
    rel_path: str
    source: str = ""
    from_cluster: str = ""
    to_clusters: list[str] = dataclasses.field(default_factory=list)
    op: Op = Op.WRITE
    size: Optional[int] = None          # whole file size, also in part notices
    checksum: Optional[Checksum] = None  # whole file checksum
    part: Optional[Part] = None
    mtime: Optional[datetime.datetime] = None
    atime: Optional[datetime.datetime] = None
    mode: Optional[int] = None
    link_target: Optional[str] = None
    rename_from: Optional[str] = None
    readers: list[str] = dataclasses.field(default_factory=list)  # private: only these users may fetch it
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # unknown fields, passed through

    @property
    def url(self) -> str:
        """Where the data is: base_url joined with the percent-encoded rel_path."""
        return self.base_url.rstrip("/") + "/" + urllib.parse.quote(self.rel_path.lstrip("/"))


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def from_timestamp(seconds: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)


def check_name(value: object, field: str) -> str:
    """A name from the wire: a non-empty str of valid Unicode without control characters."""
    if not isinstance(value, str):
        raise NoticeError(f"notice field '{field}' must be a string, not {type(value).__name__}",
                          rule="type")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NoticeError(f"notice field '{field}' is not valid UTF-8", rule="encoding") from None
    if CONTROL_CHARACTER.search(value):
        raise NoticeError(f"notice field '{field}' contains a control character: {value!r}",
                          rule="control-character")
    return value


def validate(notice: Notice, *, allowed_schemes: Optional[Collection[str]] = None) -> Notice:
    """Judge a decoded notice; return it or raise NoticeError naming the rule broken."""
    check_name(notice.rel_path, "rel_path")
    if not notice.rel_path.strip("/"):
        raise NoticeError("notice field 'rel_path' is empty", rule="empty-path")
    check_name(notice.base_url, "base_url")
    scheme = notice.base_url.partition(":")[0].lower()
    if allowed_schemes is not None and scheme not in allowed_schemes:
        raise NoticeError(
            f"base URL scheme '{scheme}' is not allowed (allowed: {', '.join(sorted(allowed_schemes))})",
            fix="add it to allowed_schemes if you trust it", rule="scheme")
    for field in ("source", "from_cluster"):
        check_name(getattr(notice, field), field)
    if not isinstance(notice.to_clusters, list):
        raise NoticeError("notice field 'to_clusters' must be a list", rule="type")
    for cluster in notice.to_clusters:
        check_name(cluster, "to_clusters")
    if not isinstance(notice.readers, list) or not all(
            isinstance(r, str) and USER_NAME.fullmatch(r) for r in notice.readers):
        raise NoticeError("notice field 'readers' must be a list of user names (letters, digits, _ and -)",
                          rule="readers")
    if notice.op in (Op.WRITE, Op.RENAME):
        if notice.size is None or notice.checksum is None:
            raise NoticeError(f"a '{notice.op.value}' notice needs 'size' and 'checksum'",
                              rule="missing-field")
    if notice.size is not None:
        _check_count(notice.size, "size")
    if notice.checksum is not None:
        _check_checksum(notice.checksum, "checksum")
    if notice.part is not None:
        _check_part(notice.part, notice.size)
    if notice.op is Op.LINK:
        if notice.link_target is None:
            raise NoticeError("a 'link' notice needs 'link_target'", rule="missing-field")
        check_name(notice.link_target, "link_target")
    if notice.op is Op.RENAME:
        if notice.rename_from is None:
            raise NoticeError("a 'rename' notice needs 'rename_from'", rule="missing-field")
        check_name(notice.rename_from, "rename_from")
    if notice.mode is not None and not (isinstance(notice.mode, int) and 0 <= notice.mode <= 0o7777):
        raise NoticeError(f"notice field 'mode' is not a file mode: {notice.mode!r}", rule="mode")
    return notice


def _check_count(value: object, field: str, *, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise NoticeError(f"notice field '{field}' must be an integer, not {value!r}", rule="type")
    if not minimum <= value <= MAX_FILE_SIZE:
        raise NoticeError(f"notice field '{field}' is out of range: {value}", rule="size")


def _check_checksum(value: Checksum, field: str) -> None:
    check_name(value.method, f"{field}.method")
    if value.method not in checksum.METHODS:
        raise NoticeError(f"notice field '{field}.method' is not a checksum method dd knows: "
                          f"{value.method!r:.30}", rule="checksum-method")
    check_name(value.value, f"{field}.value")
    if len(value.value) > 256:
        raise NoticeError(f"notice field '{field}.value' is too long", rule="checksum")


def _check_part(part: Part, size: Optional[int]) -> None:
    # Imported here: parts arithmetic is its own module and only part notices need it.
    from dd.core import parts

    for field in ("block_size", "block_count", "remainder", "block_number"):
        _check_count(getattr(part, field), f"part.{field}")
    _check_checksum(part.checksum, "part.checksum")
    parts.check(part, size)

