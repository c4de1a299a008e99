"""Sarracenia v02 format: a one-line text body and AMQP headers.

The body is ``<pubtime> <baseUrl> <relPath>``, pubtime as YYYYMMDDHHMMSS.fff
(sr3 writes nine decimals; dd pads microseconds with zeros and truncates on
decode).  Spaces and '#' in the URL and path travel as %20 and %23, as
Sarracenia writes them; '%' itself is not escaped, so a name that literally
contains "%20" or "%23" arrives with a space or '#' instead.  sr3 publishes
on ``v02.post.<dir>...`` (post_topicPrefix v02.post) and sends no topic header.

Headers: ``sum``, ``parts``, ``mtime``, ``atime``, ``mode`` (octal text),
``source``, ``from_cluster``, ``to_clusters`` (comma-separated), ``oldname``
(a rename's former path), ``link`` (a link's target).  ``sum`` is a letter,
a comma and a value; the letter also says what happened to the file.  As in
sr_v03, whatever dd cannot verify becomes ``none`` or ``name``:

======  ===========================  ========================================
letter  sr meaning                   dd
======  ===========================  ========================================
s / d   sha512 / md5 (hex)           sha512 / md5, verified
n       md5 of the file's base name  name (sha512 of relPath), both ways
0       random                       none, both ways
a / z   arbitrary / cod,<letter>     none, keeping the value
R       remove                       delete (no checksum)
L       link (needs ``link``)        link (no checksum)
m / r   mkdir / rmdir                refused: dd has no directory operations
======  ===========================  ========================================

sha256 and xxh128 have no letter: encoding such a notice is refused.  sr3
3.3.1 sends link notices in v02 without the ``link`` header, which dd must
refuse for want of a target: have such peers post v03.

``parts`` is ``1,<size>,1,0,0`` for a whole file and ``i,<block size>,<block
count>,<remainder>,<block number>`` for a part (its checksum becomes ``none``
keeping the value, see sr_v03); ``p`` (separate part files) is refused.
Other headers with plain values (text, numbers, booleans) are kept in
``notice.extra`` and sent back out; ``topic`` is routing, not notice data.
"""
from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Mapping
from typing import Any

from dd.core import parts
from dd.core.errors import NoticeError
from dd.core.formats import sr_v03
from dd.core.formats.fields import take
from dd.core.notice import Checksum, Notice, Op, Part

NAME = "sr_v02"
TOPIC_PREFIX = "v02.post"
CONTENT_TYPE = "text/plain"

_METHODS = {"s": "sha512", "d": "md5", "n": "md5name", "0": "random", "a": "arbitrary",
            "z": "cod"}
_LETTERS = {method: letter for letter, method in _METHODS.items()}
_DIRECTORY_SUMS = {"m": "mkdir", "r": "rmdir"}
_PUBTIME = re.compile(rb"[0-9]{8}T?[0-9]{6}")
# Bounded digits: int() refuses very long strings with a ValueError of its own.
_PARTS = re.compile(r"([^,]*),([0-9]{1,19}),([0-9]{1,19}),([0-9]{1,19}),([0-9]{1,19})")
_HEADER_TYPES = (str, int, float, bool)


def recognizes(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> bool:
    return body.lstrip()[:1] != b"{" and ("sum" in headers or bool(_PUBTIME.match(body)))


def encode(notice: Notice) -> tuple[bytes, dict[str, Any]]:
    pubtime = sr_v03.format_time(notice.pubtime, "")
    words = (pubtime, _quote(notice.base_url), _quote(notice.rel_path))
    headers: dict[str, Any] = {"sum": _sum(notice)}
    if notice.part is not None:
        p = notice.part
        headers["parts"] = f"i,{p.block_size},{p.block_count},{p.remainder},{p.block_number}"
    elif notice.size is not None:
        headers["parts"] = f"1,{notice.size},1,0,0"
    headers.update(sr_v03.common_fields(notice, ""))
    if notice.rename_from is not None:
        headers["oldname"] = notice.rename_from
    if notice.op is Op.LINK:
        headers["link"] = notice.link_target
    for name, value in notice.extra.items():
        headers.setdefault(name, value)
    return " ".join(words).encode(), headers


def decode(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> Notice:
    try:
        words = body.decode("utf-8").rstrip("\r\n").split(" ")
    except UnicodeDecodeError:
        raise NoticeError("notice is not valid UTF-8", rule="encoding") from None
    if len(words) != 3:
        raise NoticeError(f"Sarracenia v02 notice must be 'pubtime baseUrl relPath', "
                          f"not {len(words)} space-separated words", rule="format")
    fields = dict(headers)
    fields.pop("topic", None)
    notice = Notice(pubtime=sr_v03.parse_time(words[0], "pubtime"),
                    base_url=_unquote(words[1]), rel_path=_unquote(words[2]))
    sr_v03.read_common_fields(notice, fields)
    letter, _, value = take(fields, "sum", str).partition(",")
    notice.rename_from = take(fields, "oldname", str, None)
    notice.op = _op(letter, renamed=notice.rename_from is not None)
    if notice.op is Op.LINK:
        notice.link_target = take(fields, "link", str, None)
        if notice.link_target is None:
            raise NoticeError("Sarracenia v02 link notice has no 'link' header naming its target",
                              fix="sr3 omits it in v02: have the peer post with post_format v03",
                              rule="missing-field")
    elif notice.op is not Op.DELETE:
        notice.checksum = _checksum(letter, value, notice.rel_path)
    layout = take(fields, "parts", str, None)
    if layout is not None:
        notice.size, notice.part = _read_parts(layout, value)
    if notice.part is not None:
        notice.checksum = notice.part.checksum
    notice.extra = {k: v for k, v in fields.items() if isinstance(v, _HEADER_TYPES)}
    return notice


def _quote(text: str) -> str:
    return text.replace(" ", "%20").replace("#", "%23")


def _unquote(text: str) -> str:
    return text.replace("%20", " ").replace("%23", "#")


def _sum(notice: Notice) -> str:
    if notice.op is Op.DELETE:
        return "R," + _hash("sha512", posixpath.basename(notice.rel_path))
    if notice.op is Op.LINK:
        if notice.link_target is None:
            raise NoticeError("a 'link' notice needs 'link_target'", rule="missing-field")
        return "L," + _hash("sha512", notice.link_target)
    checksum = notice.part.checksum if notice.part else notice.checksum
    if checksum is None:
        raise NoticeError(f"a '{notice.op.value}' notice needs a checksum", rule="missing-field")
    method, value = sr_v03.sr_checksum(checksum, NAME)
    if method == "md5name":
        value = _hash("md5", posixpath.basename(notice.rel_path))
    elif isinstance(value, bytes):
        value = value.hex()
    return f"{_LETTERS[method]},{value}"


def _hash(method: str, text: str) -> str:
    """Sarracenia's sums of names (not contents): R, L and n."""
    return hashlib.new(method, text.encode("utf-8", "surrogatepass")).hexdigest()


def _op(letter: str, renamed: bool) -> Op:
    if letter in _DIRECTORY_SUMS:
        raise NoticeError(f"notice is a {_DIRECTORY_SUMS[letter]} operation, which dd does not "
                          f"support", fix="reject such notices upstream", rule="op")
    return {"R": Op.DELETE, "L": Op.LINK}.get(letter, Op.RENAME if renamed else Op.WRITE)


def _checksum(letter: str, value: str, rel_path: str) -> Checksum:
    if letter not in _METHODS:
        raise NoticeError(f"notice header 'sum' has an unknown method letter: {letter!r:.10}",
                          rule="checksum")
    return sr_v03.read_checksum(_METHODS[letter], value, sr_v03.hex_digest, rel_path)


def _read_parts(text: str, value: str) -> tuple[int, Part | None]:
    """(whole file size, Part or None) from a parts header."""
    match = _PARTS.fullmatch(text)
    if not match:
        raise NoticeError(f"notice header 'parts' is not 'style,size,count,remainder,number': "
                          f"{text!r:.40}", rule="parts")
    style = match[1]
    size, count, remainder, number = map(int, match.groups()[1:])
    if style == "1":
        return size, None
    if style != "i":
        raise NoticeError(f"notice header 'parts' has style {style!r:.10}: only whole files ('1') "
                          f"and in-place parts ('i') are supported", rule="parts")
    whole = parts.size_of(size, count, remainder)
    return whole, Part(size, count, remainder, number, sr_v03.part_tag(value))
