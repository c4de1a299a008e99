"""dd's own v02 format: one JSON object per notice (documented in dd_post(7))."""
from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from typing import Any

from dd.core.errors import NoticeError
from dd.core.formats.fields import load_json, parse_mode, parse_time, take, top_level
from dd.core.notice import Checksum, Notice, Op, Part

NAME = "v02"
TOPIC_PREFIX = "v02.post"
CONTENT_TYPE = "application/json"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def recognizes(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> bool:
    """`fields`: the body's JSON object, when the caller has parsed it already."""
    # dd's JSON always has the key rel_path; Sarracenia v03 says relPath.
    fields = top_level(body) if fields is None else fields
    return fields is not None and "rel_path" in fields


def encode(notice: Notice) -> tuple[bytes, dict[str, Any]]:
    fields: dict[str, Any] = {
        "pubtime": _time(notice.pubtime),
        "base_url": notice.base_url,
        "rel_path": notice.rel_path,
        "source": notice.source,
        "from_cluster": notice.from_cluster,
        "to_clusters": list(notice.to_clusters),
        "op": notice.op.value,
    }
    if notice.size is not None:
        fields["size"] = notice.size
    if notice.checksum is not None:
        fields["checksum"] = _checksum(notice.checksum)
    if notice.part is not None:
        p = notice.part
        fields["part"] = {"block_size": p.block_size, "block_count": p.block_count,
                          "remainder": p.remainder, "block_number": p.block_number,
                          "checksum": _checksum(p.checksum)}
    for name in ("mtime", "atime"):
        if getattr(notice, name) is not None:
            fields[name] = _time(getattr(notice, name))
    if notice.mode is not None:
        fields["mode"] = f"{notice.mode:04o}"
    if notice.link_target is not None:
        fields["link_target"] = notice.link_target
    if notice.rename_from is not None:
        fields["rename_from"] = notice.rename_from
    if notice.readers:
        fields["readers"] = list(notice.readers)
    for name, value in notice.extra.items():
        fields.setdefault(name, value)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode(), {}


def decode(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> Notice:
    fields = load_json(body) if fields is None else fields
    op_name = take(fields, "op", str)
    try:
        op = Op(op_name)
    except ValueError:
        raise NoticeError(f"notice field 'op' is not one of {', '.join(o.value for o in Op)}: "
                          f"{op_name!r:.30}", rule="op") from None
    part = take(fields, "part", dict, None)
    checksum = take(fields, "checksum", dict, None)
    mode = take(fields, "mode", str, None)
    notice = Notice(
        pubtime=_parse_time(take(fields, "pubtime", str), "pubtime"),
        base_url=take(fields, "base_url", str),
        rel_path=take(fields, "rel_path", str),
        source=take(fields, "source", str),
        from_cluster=take(fields, "from_cluster", str),
        to_clusters=take(fields, "to_clusters", list),
        op=op,
        size=take(fields, "size", int, None),
        checksum=_read_checksum(checksum, "checksum") if checksum is not None else None,
        part=_read_part(part) if part is not None else None,
        mtime=_read_time(fields, "mtime"),
        atime=_read_time(fields, "atime"),
        mode=parse_mode(mode) if mode is not None else None,
        link_target=take(fields, "link_target", str, None),
        rename_from=take(fields, "rename_from", str, None),
        readers=take(fields, "readers", list, []),
    )
    notice.extra = fields  # what is left is unknown to this version: pass it through
    return notice


def _time(moment: datetime.datetime) -> str:
    # isoformat is TIME_FORMAT's text for years of four digits, and faster than strftime
    # (three times per notice); it appends the offset of an aware time, which is cut.
    if moment.year >= 1000:
        return moment.isoformat(timespec="microseconds")[:26] + "Z"
    return moment.strftime(TIME_FORMAT)


def _read_time(fields: dict[str, Any], name: str) -> datetime.datetime | None:
    text = take(fields, name, str, None)
    return _parse_time(text, name) if text is not None else None


def _parse_time(text: str, name: str) -> datetime.datetime:
    # fromisoformat is C and ten times faster than strptime; it reads exactly our form
    # once the 'Z' is off, and anything else falls through to the strict parser's error.
    if len(text) == 27 and text[-1] == "Z" and text[10] == "T":
        try:
            return datetime.datetime.fromisoformat(text[:-1]).replace(tzinfo=datetime.timezone.utc)
        except ValueError:
            pass
    return parse_time(text, name, (TIME_FORMAT,))


def _checksum(checksum: Checksum) -> dict[str, str]:
    return {"method": checksum.method, "value": checksum.value}


def _read_checksum(fields: dict[str, Any], name: str) -> Checksum:
    fields = dict(fields)
    return Checksum(take(fields, "method", str), take(fields, "value", str))


def _read_part(fields: dict[str, Any]) -> Part:
    fields = dict(fields)
    checksum = take(fields, "checksum", dict)
    return Part(block_size=take(fields, "block_size", int), block_count=take(fields, "block_count", int),
                remainder=take(fields, "remainder", int), block_number=take(fields, "block_number", int),
                checksum=_read_checksum(checksum, "part.checksum"))
