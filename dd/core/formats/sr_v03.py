"""Sarracenia v03 format: one JSON object per notice, as metpx-sr3 posts it.

sr3 3.3.1 publishes on topic ``v03.<dir>.<dir>...`` (its default topicPrefix
is ``v03``) with content type application/json and no AMQP headers: the topic
it derives is used as routing key, never sent as a header.  A body::

    {"pubTime": "20190120T045018.314854383", "baseUrl": "http://host/",
     "relPath": "a/b/c.txt", "size": 6, "mode": "644",
     "identity": {"method": "sha512", "value": "<base64>"},
     "mtime": "...", "atime": "...", "source": "...", "from_cluster": "...",
     "to_clusters": "c1,c2", "fileOp": {...}, "blocks": {...}}

Checksums (``identity``) are mapped onto methods dd knows, so that its
receiver verifies what it can and hashes on download what it cannot:

* sha512, md5: same names; dd's lowercase hex <-> sr3's base64.  Verified.
* dd ``none`` -> ``random`` with dd's value.  Every sr method dd cannot
  verify (random, arbitrary, cod and any unknown one) -> ``none`` keeping the
  sr value (cod's value is the algorithm's name), which serves duplicate
  suppression; arbitrary and cod therefore come back out as random.
* dd ``name`` -> no identity, sr3's way of saying md5name.  No identity on a
  write or rename (and md5name) -> dd ``name`` computed from relPath: both
  announce by name only, though sr's md5name hashes the base name with md5 and
  dd's name the relative path with sha512, so each side gets its own value.
* sha256, xxh128: refused on encode, sr3 3.3.1 has no such methods and would
  deliver unchecked; arriving from the wire they are read (base64 -> hex).

Operations (``fileOp``): none = write, ``remove`` = delete, ``link`` = link,
``rename`` = rename (with ``link``: a renamed link).  ``directory`` (mkdir,
rmdir) and ``hlink`` are refused: dd has no directory or hard-link operations.

Parts (``blocks``): sr3 sends ``{"method": "inplace", "size": <block size>,
"number": n, "manifest": {"0": {"size": .., "identity": ..}, ...}}``, with
the top-level size and identity those of block n.  Block count, remainder
and the whole file's size come from the manifest.  sr3 3.3.1 computes block
identities over the bytes from the block's offset onwards rather than over
the block, so dd cannot verify them: a part's checksum, and the whole-file
checksum (which sr3 does not send), both become ``none`` holding the block's
identity: enough for duplicate suppression, never verified.
``partitioned``/``separate`` blocks are refused.

Times: sr3 writes up to nine decimals; dd keeps microseconds, truncating on
decode and padding with zeros on encode.  ``to_clusters`` is a comma-separated
string.  Fields dd does not know are kept in ``notice.extra`` and sent back
out, except ``retrievePath``, which is refused: the data would then be
somewhere other than baseUrl + relPath, the only place dd fetches from.
"""
from __future__ import annotations

import base64
import binascii
import datetime
import decimal
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, Union

from dd.core import checksum, parts
from dd.core.errors import NoticeError
from dd.core.formats.fields import load_json, parse_mode, take, top_level
from dd.core.notice import Checksum, Notice, Op, Part

NAME = "sr_v03"
TOPIC_PREFIX = "v03"
CONTENT_TYPE = "application/json"

#: Digest sizes in bytes of the methods dd stores as hex.
DIGESTS = {"sha512": 64, "md5": 16, "sha256": 32, "xxh128": 16}
#: Digests sr3 3.3.1 can verify; dd's others have no Sarracenia name.
SR_DIGESTS = ("sha512", "md5")
#: A block manifest lists every block: past this, a notice no longer fits a message.
MAX_BLOCKS = 10_000

_TIME = re.compile(r"([0-9]{8})T?([0-9]{6})((?:\.[0-9]*)?(?:e-[0-9]{1,2})?)")
_FILE_OPS = ("link", "rename", "remove")


def recognizes(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> bool:
    fields = top_level(body) if fields is None else fields
    return fields is not None and any(key in fields for key in ("relPath", "baseUrl", "pubTime"))


def encode(notice: Notice) -> tuple[bytes, dict[str, Any]]:
    fields: dict[str, Any] = {"pubTime": format_time(notice.pubtime, "T"), "baseUrl": notice.base_url,
                              "relPath": notice.rel_path}
    fields.update(common_fields(notice, "T"))
    file_op: dict[str, str | None] = {}
    if notice.op is Op.DELETE:
        file_op["remove"] = ""
    elif notice.op is Op.LINK:
        file_op["link"] = notice.link_target
    if notice.rename_from is not None:
        file_op["rename"] = notice.rename_from
    if file_op:
        fields["fileOp"] = file_op
    announced = notice.part.checksum if notice.part else notice.checksum
    identity = _identity(sr_checksum(announced, NAME)) if announced else None
    if identity:
        fields["identity"] = identity
    if notice.size is not None:
        fields["size"] = notice.size
    if notice.part is not None:
        fields["size"], fields["blocks"] = _blocks(notice.part, identity)
    for name, value in notice.extra.items():
        fields.setdefault(name, value)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode(), {}


def decode(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> Notice:
    fields = load_json(body) if fields is None else fields
    if "retrievePath" in fields:
        raise NoticeError("notice has a 'retrievePath': its data is not at baseUrl + relPath, "
                          "the only place dd fetches from", rule="unsupported")
    rel_path = take(fields, "relPath", str)
    notice = Notice(pubtime=parse_time(take(fields, "pubTime", str), "pubTime"),
                    base_url=take(fields, "baseUrl", str), rel_path=rel_path)
    read_common_fields(notice, fields)
    file_op = take(fields, "fileOp", dict, None)
    notice.op, notice.link_target, notice.rename_from = _read_file_op(file_op or {})
    identity = _read_identity(fields)
    size = take(fields, "size", int, None)
    blocks = take(fields, "blocks", dict, None)
    if blocks is not None:
        notice.size, notice.part = _read_blocks(blocks, size, identity)
        notice.checksum = notice.part.checksum
    else:
        notice.size = size
        if identity is not None:
            notice.checksum = read_checksum(*identity, _base64_digest, rel_path)
        elif notice.op in (Op.WRITE, Op.RENAME):
            notice.checksum = name_checksum(rel_path)
    notice.extra = fields
    return notice


# --- Helpers shared with sr_v02, which sr3 defines as a translation of v03. ---

def format_time(moment: datetime.datetime, separator: str) -> str:
    """sr3's time: YYYYMMDD<separator>HHMMSS.fffffffff (nanoseconds, padded)."""
    m = moment
    return (f"{m.year:04d}{m.month:02d}{m.day:02d}{separator}"
            f"{m.hour:02d}{m.minute:02d}{m.second:02d}.{m.microsecond:06d}000")


def parse_time(text: str, name: str) -> datetime.datetime:
    """Any time sr3 writes: with or without 'T', 0 to 9+ decimals, and the
    exponent its float formatting produces for tiny fractions ('.5e-05')."""
    match = _TIME.fullmatch(text)
    try:
        if match is None:
            raise ValueError(text)
        moment = datetime.datetime.strptime(match[1] + match[2], "%Y%m%d%H%M%S")
        fraction = decimal.Decimal("0" + match[3])
    except (ValueError, decimal.InvalidOperation):
        raise NoticeError(f"notice field '{name}' is not a Sarracenia time: {text!r:.40}",
                          rule="time") from None
    # int() truncates; min() too, where Decimal's 28 digits rounded .9999... up to a whole second.
    micro = min(int(fraction * 1_000_000), 999_999)
    return moment.replace(microsecond=micro, tzinfo=datetime.timezone.utc)


def common_fields(notice: Notice, separator: str) -> dict[str, str]:
    """The fields v02 sends as headers and v03 in its body, under the same names."""
    fields: dict[str, str] = {}
    for name in ("mtime", "atime"):
        if getattr(notice, name) is not None:
            fields[name] = format_time(getattr(notice, name), separator)
    if notice.mode is not None:
        fields["mode"] = f"{notice.mode:o}"
    for name in ("source", "from_cluster"):
        if getattr(notice, name):
            fields[name] = getattr(notice, name)
    if notice.to_clusters:
        fields["to_clusters"] = ",".join(notice.to_clusters)
    return fields


def read_common_fields(notice: Notice, fields: dict[str, Any]) -> None:
    """Take what common_fields writes from `fields` into `notice`."""
    for name in ("mtime", "atime"):
        text = take(fields, name, str, None)
        setattr(notice, name, parse_time(text, name) if text is not None else None)
    mode = take(fields, "mode", str, None)
    notice.mode = parse_mode(mode) if mode is not None else None
    notice.source = take(fields, "source", str, "")
    notice.from_cluster = take(fields, "from_cluster", str, "")
    clusters = fields.pop("to_clusters", [])
    if isinstance(clusters, str):
        clusters = [c for c in clusters.split(",") if c]
    if not isinstance(clusters, list):
        raise NoticeError(f"notice field 'to_clusters' must be a comma-separated string, "
                          f"not {clusters!r:.60}", rule="type")
    notice.to_clusters = clusters


#: A checksum as Sarracenia carries it: (method, digest bytes, text value, or None for md5name).
SrChecksum = tuple[str, Union[bytes, str, None]]


def sr_checksum(checksum: Checksum, fmt: str) -> SrChecksum:
    """(sr method, digest bytes or text value) for a dd checksum, or NoticeError
    when Sarracenia cannot carry it.  md5name's value is None: sr3 omits it."""
    method, value = checksum.method, checksum.value
    if method in SR_DIGESTS:
        return method, hex_digest(method, value)
    if method == "none":
        return "random", value
    if method == "name":
        return "md5name", None
    raise NoticeError(f"checksum {method!r:.20} has no Sarracenia form",
                      fix=f"use checksum sha512 or md5 with post_format {fmt}", rule="format")


def read_checksum(method: str, value: str, digest: Callable[[str, str], bytes], rel_path: str) -> Checksum:
    """The dd checksum for a Sarracenia (method, value); `digest` turns a
    digest's wire text into bytes (base64 in v03, hex in v02)."""
    if method in DIGESTS:
        return Checksum(method, digest(method, value).hex())
    if method == "md5name":
        return name_checksum(rel_path)
    return Checksum("none", value)


def name_checksum(rel_path: str) -> Checksum:
    try:
        return Checksum("name", checksum.of_name(rel_path))
    except UnicodeEncodeError:
        raise NoticeError("notice field 'relPath' is not valid UTF-8", rule="encoding") from None


def part_tag(raw_value: str) -> Checksum:
    """The checksum dd gives a Sarracenia part: a tag it never verifies (see module doc)."""
    return Checksum("none", raw_value)


def hex_digest(method: str, value: str) -> bytes:
    """The bytes of a digest written in hex (v02's sums)."""
    try:
        return _sized(method, bytes.fromhex(value))
    except ValueError:
        raise NoticeError(f"{method} checksum is not hexadecimal: {value!r:.40}",
                          rule="checksum") from None


def _base64_digest(method: str, value: str) -> bytes:
    # sr3 relaying a v02 sum into v03 keeps the line breaks of Python's base64 codec.
    try:
        return _sized(method, base64.b64decode(value.replace("\n", ""), validate=True))
    except (ValueError, binascii.Error):
        raise NoticeError(f"{method} identity is not base64: {value!r:.40}",
                          rule="checksum") from None


def _sized(method: str, digest: bytes) -> bytes:
    if len(digest) != DIGESTS[method]:
        raise NoticeError(f"{method} checksum is {len(digest)} bytes, not {DIGESTS[method]}",
                          rule="checksum")
    return digest


def _read_identity(fields: dict[str, Any]) -> tuple[str, str] | None:
    """(method, value) of the identity (early v03 called it integrity), or None."""
    identity = take(fields, "identity", dict, None)
    if identity is None:
        identity = take(fields, "integrity", dict, None)
    if identity is None:
        return None
    identity = dict(identity)
    return take(identity, "method", str), take(identity, "value", str)


def _identity(sr: SrChecksum) -> dict[str, str | None] | None:
    method, value = sr
    if method == "md5name":
        return None
    if isinstance(value, bytes):
        value = base64.b64encode(value).decode("ascii")
    return {"method": method, "value": value}


def _read_file_op(file_op: dict[str, Any]) -> tuple[Op, str | None, str | None]:
    ops = dict(file_op)
    if "directory" in ops or "hlink" in ops:
        kind = "directory" if "directory" in ops else "hard link"
        raise NoticeError(f"notice is a {kind} operation, which dd does not support",
                          fix="reject such notices upstream", rule="op")
    link, rename, remove = (take(ops, name, str, None) for name in _FILE_OPS)
    if ops:
        unknown = ", ".join(map(repr, ops))
        raise NoticeError(f"notice field 'fileOp' has unknown operations: {unknown:.60}", rule="op")
    if link is not None and remove is not None:
        raise NoticeError("notice field 'fileOp' is both a link and a remove", rule="op")
    op = (Op.LINK if link is not None else Op.DELETE if remove is not None
          else Op.RENAME if rename is not None else Op.WRITE)
    return op, link, rename


def _blocks(part: Part, identity: dict[str, str | None] | None) -> tuple[int, dict[str, Any]]:
    """(size of this block, sr3 blocks field) for a dd part."""
    if part.block_count > MAX_BLOCKS:
        raise NoticeError(f"{part.block_count} parts are too many for an sr3 block manifest "
                          f"(at most {MAX_BLOCKS})", fix="raise blocksize", rule="format")
    geometry = (part.block_size, part.block_count, part.remainder)
    manifest: dict[str, dict[str, Any]] = {str(n): {"size": parts.span(*geometry, n)[1]}
                                           for n in range(part.block_count)}
    if identity:
        manifest[str(part.block_number)]["identity"] = identity["value"]
    size = manifest[str(part.block_number)]["size"]
    return size, {"method": "inplace", "size": part.block_size, "number": part.block_number,
                  "manifest": manifest}


def _read_blocks(blocks: dict[str, Any], size: int | None, identity: tuple[str, str] | None) -> tuple[int, Part]:
    """(whole file size, Part) from sr3's blocks field and the block's size and identity."""
    blocks = dict(blocks)
    method = take(blocks, "method", str)
    if method != "inplace":
        raise NoticeError(f"sr3 block method {method!r:.20} is not supported, only 'inplace'",
                          rule="parts")
    block_size, number = take(blocks, "size", int), take(blocks, "number", int)
    manifest = take(blocks, "manifest", dict)
    if set(manifest) != {str(n) for n in range(len(manifest))}:
        raise NoticeError("notice field 'blocks.manifest' must list blocks 0 to N-1", rule="parts")
    sizes = []
    for n in range(len(manifest)):
        entry = manifest[str(n)]
        if not isinstance(entry, dict):
            raise NoticeError(f"notice field 'blocks.manifest.{n}' must be an object", rule="parts")
        sizes.append(take(dict(entry), "size", int))
    if not sizes:
        raise NoticeError("notice field 'blocks.manifest' is empty", rule="parts")
    if size is not None and 0 <= number < len(sizes) and size != sizes[number]:
        raise NoticeError(f"notice size {size} is not the size of block {number} ({sizes[number]})",
                          rule="parts")
    remainder = 0 if sizes[-1] == block_size else sizes[-1]
    tag = part_tag(identity[1] if identity is not None else "")
    return sum(sizes), Part(block_size, len(sizes), remainder, number, tag)
