"""Wire formats: dd's own v02 JSON, Sarracenia's v02 and v03, and WMO WIS2 notification messages.

Each format module offers the same face: NAME, TOPIC_PREFIX, CONTENT_TYPE,
``recognizes(body, headers, fields=None)``, ``encode(notice) -> (body, headers)`` and
``decode(body, headers, fields=None) -> Notice`` (`fields`: a JSON body already parsed).
Codecs only translate; the notice is
judged once, by dd.core.notice.validate, after decoding.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any, Protocol

from dd.core import notice as notice_mod
from dd.core import topic as topic_mod
from dd.core.errors import NoticeError
from dd.core.formats.fields import load_json
from dd.core.formats import sr_v02, sr_v03, v02, wis2
from dd.core.notice import Notice


class Codec(Protocol):
    """The face every format module offers (see above)."""

    NAME: str
    TOPIC_PREFIX: str
    CONTENT_TYPE: str

    def recognizes(self, body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> bool: ...

    def encode(self, notice: Notice) -> tuple[bytes, dict[str, Any]]: ...

    def decode(self, body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> Notice: ...


#: Checked in this order when recognising an incoming message.
FORMATS: dict[str, Codec] = {f.NAME: f for f in (v02, wis2, sr_v03, sr_v02)}
DEFAULT = v02.NAME
DEFAULT_MAX_SIZE = 1 << 20


@dataclasses.dataclass(frozen=True)
class Message:
    """A notice as it travels on the broker."""

    topic: str
    body: bytes
    headers: dict[str, Any]
    content_type: str
    exchange: str | None = None     # where it goes when its format says (WIS2), not the poster


def encode(notice: Notice, fmt: str = DEFAULT, topic_prefix: str | None = None, *,
           wis2_settings: wis2.Settings = wis2.PLAIN, content: bytes | None = None) -> Message:
    """`wis2_settings` and `content` (the file's bytes, to inline) are for post_format wis2."""
    codec = FORMATS[fmt]
    if notice.readers and fmt != v02.NAME:
        # Sarracenia and WIS2 have no private files: their pumps would serve this one to anybody.
        raise NoticeError(f"a private notice (readers) cannot be posted in {fmt}",
                          fix=f"use post_format {v02.NAME}", rule="format")
    if codec is wis2:
        # A WIS2 topic names the dataset, not the directory.
        body, headers = wis2.encode(notice, wis2_settings, content)
        exchange, topic = wis2.topic(notice, topic_prefix, wis2_settings)
        return Message(topic, body, headers, wis2.CONTENT_TYPE, exchange)
    body, headers = codec.encode(notice)
    topic = topic_mod.for_path(topic_prefix or codec.TOPIC_PREFIX, notice.rel_path)
    return Message(topic, body, headers, codec.CONTENT_TYPE)


def decode(body: bytes, headers: Mapping[str, Any] | None = None, *, max_size: int = DEFAULT_MAX_SIZE,
           allowed_schemes: Collection[str] | None = None, exchange: str = "",
           topic: str | None = None) -> Notice:
    """Recognise the format of an incoming message, decode and validate it.  `exchange`
    and `topic`: where it came from, which a WIS2 notice keeps (its dataset)."""
    headers = headers or {}
    if len(body) > max_size:
        raise NoticeError(f"notice is {len(body)} bytes, over the {max_size}-byte limit",
                          fix="raise max_notice_size if such notices are expected", rule="oversized")
    # A JSON body is parsed once, here: formats are told apart by its keys.
    fields = load_json(body) if body.lstrip()[:1] == b"{" else None
    for codec in FORMATS.values():
        if codec.recognizes(body, headers, fields):
            break
    else:
        raise NoticeError("message is in no known notice format (dd v02, Sarracenia v02 or v03, WIS2)",
                          rule="format")
    notice = codec.decode(body, headers, fields)
    if codec is wis2 and topic:
        wis2.with_topic(notice, exchange, topic)
    return notice_mod.validate(notice, allowed_schemes=allowed_schemes)

