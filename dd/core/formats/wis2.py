"""WMO WIS2 Notification Messages (WNM 1.x): GeoJSON Features, strict both ways.

A message::

    {"id": "<uuid>", "conformsTo": ["http://wis.wmo.int/spec/wnm/1/conf/core"],
     "type": "Feature", "geometry": null | {"type": "Point" | "Polygon", ...},
     "properties": {"pubtime": "2026-12-03T08:01:16.123456Z", "data_id": "a/b/c.bufr",
                    "datetime": ... | "start_datetime" and "end_datetime",
                    "integrity": {"method": "sha512", "value": "<base64>"}, ...},
     "links": [{"rel": "canonical" | "update" | "deletion", "href": "https://host/a/b/c.bufr",
                "type": "application/bufr", "length": 123}, ...]}

Both ways, what WNM says SHALL is checked, each breach a NoticeError whose rule names it
(wis2-id, wis2-integrity, wis2-links, wis2-href, wis2-size, wis2-topic, ...): no message
over 8 KiB, no inline content over 4 KiB encoded, integrity by sha256, sha384, sha512 or
sha3-256/384/512 only, exactly one canonical, update or deletion link, links by http(s),
ftp or sftp only, pubtime and datetimes in RFC 3339 UTC.

Where the data lands: the data_id when the canonical href ends with it (what dd posts),
otherwise the href's path on its server.  What dd has no field for is kept in
``notice.extra`` under the WNM names (id, data_id, datetime, geometry, metadata_id,
content, ...; the other links under ``links``) so that a relay passes it on, and three of
dd's own: ``wis2_topic`` (the topic it came on: a global cache republishes on its cache/
twin), ``wis2_pubtime`` (the text, so that nanoseconds survive: relays never change
pubtime) and ``wis2_link`` (the main link's other attributes, and its href when dd
would spell it otherwise).  The topic's centre-id is
the notice's source (with_topic).  A new copy of the data is a new message: its announcer
drops MESSAGE_FIELDS (a new id, no global-cache of another).  dd's own fields with no WNM
name (mode, mtime, source, clusters) do not travel in WIS2.
"""
from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import mimetypes
import re
import urllib.parse
import uuid
from collections.abc import Mapping
from typing import Any

from dd.core.errors import NoticeError
from dd.core.formats.fields import load_json, take, top_level
from dd.core.notice import USER_NAME, Checksum, Notice, Op

NAME = "wis2"
#: WIS2 topics name a dataset, never a directory: there is no default, the poster gives one.
TOPIC_PREFIX = ""
CONTENT_TYPE = "application/geo+json"

CONFORMANCE = "http://wis.wmo.int/spec/wnm/1/conf/core"
MAX_MESSAGE = 8192
MAX_CONTENT = 4096
#: dd's method names, WNM's; digest sizes in bytes.
DIGESTS = {"sha256": 32, "sha384": 48, "sha512": 64, "sha3-256": 32, "sha3-384": 48, "sha3-512": 64}
SCHEMES = ("http", "https", "ftp", "sftp")
MAIN_RELATIONS = ("canonical", "update", "deletion")
#: Earth-system disciplines of the WIS2 topic hierarchy (level 7).
DISCIPLINES = ("weather", "climate", "hydrology", "atmospheric-composition", "cryosphere", "ocean",
               "space-weather")
#: What names a message rather than its data: dropped when a copy of the data is announced.
MESSAGE_FIELDS = ("id", "global-cache")

_LEVEL = re.compile(r"[a-z0-9][a-z0-9_-]*")
_RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")
_ESCAPED = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TIMES = ("datetime", "start_datetime", "end_datetime")
_OWN = ("wis2_topic", "wis2_pubtime", "wis2_link")


@dataclasses.dataclass(frozen=True)
class Settings:
    """What a poster adds to the messages it writes (options wis_geometry, wis_global_cache)."""

    geometry: dict[str, Any] | None = None
    global_cache: str = ""


PLAIN = Settings()


def parse_geometry(text: str) -> dict[str, Any]:
    """A poster's geometry: 'LONGITUDE LATITUDE' for a point, or GeoJSON (a Point or a Polygon)."""
    words = text.replace(",", " ").split()
    try:
        if len(words) == 2:
            geometry: Any = {"type": "Point", "coordinates": [float(w) for w in words]}
        else:
            geometry = json.loads(text)
    except ValueError:
        raise NoticeError(f"not a point or GeoJSON: {text!r:.60}", rule="wis2-geometry") from None
    if geometry is None:
        raise NoticeError("a geometry is a Point or a Polygon: leave the option unset for none",
                          rule="wis2-geometry")
    check_geometry(geometry)
    return dict(geometry)


def recognizes(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> bool:
    fields = top_level(body) if fields is None else fields
    # A Feature without conformsTo is a WIS2 message to refuse by name, unless it is sr3's v03.
    return fields is not None and ("conformsTo" in fields
                                   or (fields.get("type") == "Feature" and "relPath" not in fields))


# --- Encoding ---

def encode(notice: Notice, settings: Settings = PLAIN,
           content: bytes | None = None) -> tuple[bytes, dict[str, Any]]:
    """The message announcing `notice`; `content`, the file's bytes, is inlined when small enough."""
    if notice.part is not None:
        raise NoticeError("a part of a file cannot be announced in WIS2", fix="set blocksize 1",
                          rule="wis2-parts")
    if notice.op is Op.LINK:
        raise NoticeError(f"{notice.rel_path!r}: a symbolic link has no WIS2 form (only new, updated or "
                          "deleted data)", rule="wis2-op")
    extra = dict(notice.extra)
    own = {name: extra.pop(name, None) for name in _OWN}
    message_id = extra.pop("id", None) or str(uuid.uuid4())
    geometry = extra.pop("geometry", settings.geometry)
    links = extra.pop("links", [])
    properties: dict[str, Any] = {"pubtime": _pubtime_text(notice.pubtime, own["wis2_pubtime"]),
                                  "data_id": extra.pop("data_id", None) or notice.rel_path}
    if not any(name in extra for name in _TIMES):
        properties["datetime"] = format_time(notice.mtime) if notice.mtime else None
    # A message that came without integrity goes on without; anything else says it in WNM's terms.
    unsummed = own["wis2_pubtime"] is not None and notice.checksum == Checksum("none", "")
    if notice.checksum is not None and notice.op is not Op.DELETE and not unsummed:
        properties["integrity"] = integrity(notice.checksum)
    properties.update((k, v) for k, v in extra.items() if k not in ("pubtime", "integrity"))
    if settings.global_cache:
        properties["global-cache"] = settings.global_cache
    if content is not None and (inline := content_of(content)) is not None:
        properties["content"] = inline
    kept = dict(own["wis2_link"] or {})
    rel = "deletion" if notice.op is Op.DELETE else "update" if kept.pop("rel", None) == "update" else "canonical"
    href = kept.pop("href", None)
    if not (isinstance(href, str) and _same_place(href, properties["data_id"], notice)):
        href = notice.url
    link = {"rel": rel, "href": href,
            "type": kept.pop("type", None) or mimetypes.guess_type(notice.rel_path)[0] or "application/octet-stream"}
    if notice.size is not None:
        link["length"] = notice.size
    link.update(kept)
    message = {"id": message_id, "conformsTo": [CONFORMANCE], "type": "Feature", "geometry": geometry,
               "properties": properties, "links": [link, *links]}
    body = _dump(message)
    if len(body) > MAX_MESSAGE and "content" in properties:
        del properties["content"]  # the link alone says where the data is
        body = _dump(message)
    check(message, len(body))
    return body, {}


def _dump(message: dict[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode()


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 in UTC, with microseconds when there are any."""
    text = moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return text + (f".{moment.microsecond:06d}Z" if moment.microsecond else "Z")


def _pubtime_text(pubtime: datetime.datetime, original: object) -> str:
    # The text as first published, when it is still this notice's pubtime: relays never change it.
    if isinstance(original, str):
        try:
            if parse_time(original, "pubtime") == pubtime:
                return original
        except NoticeError:
            pass
    return format_time(pubtime)


def integrity(value: Checksum) -> dict[str, str]:
    """WNM's integrity for a dd checksum (hex -> base64), or NoticeError for a method WIS2 refuses."""
    if value.method not in DIGESTS:
        raise NoticeError(f"checksum {value.method!r:.20} is not allowed in WIS2 "
                          f"(only {', '.join(DIGESTS)})",
                          fix="use checksum sha512 (or sha256, sha384, sha3-256, sha3-384, sha3-512) "
                              "with post_format wis2", rule="wis2-integrity")
    return {"method": value.method, "value": base64.b64encode(bytes.fromhex(value.value)).decode("ascii")}


def content_of(data: bytes) -> dict[str, Any] | None:
    """The inline form of `data` (UTF-8 text as is, anything else in base64), or None when
    that form would be over WNM's 4096 bytes."""
    try:
        value, encoding = data.decode("utf-8"), "utf-8"
        if _ESCAPED.search(value):  # JSON would write each as six bytes
            raise UnicodeDecodeError("utf-8", data, 0, 1, "control character")
    except UnicodeDecodeError:
        value, encoding = base64.b64encode(data).decode("ascii"), "base64"
    if len(value.encode("utf-8")) > MAX_CONTENT:
        return None
    return {"encoding": encoding, "value": value, "size": len(data)}


# --- Topics ---

def topic(notice: Notice, configured: str | None, settings: Settings = PLAIN) -> tuple[str, str]:
    """(exchange, AMQP topic) of a message's checked WIS2 topic: its first level (origin or
    cache: an MQTT topic's first level is an exchange) and the others between dots.  The
    topic is `configured` (post_topic_prefix), else the one the notice came on; a global
    cache republishes origin/... on cache/...."""
    text = configured or notice.extra.get("wis2_topic")
    if not isinstance(text, str) or not text:
        raise NoticeError("post_format wis2 needs a WIS2 topic for "
                          f"{notice.rel_path!r}: the notice came with none",
                          fix="set post_topic_prefix origin/a/wis2/<centre-id>/data/core/<discipline>/...",
                          rule="wis2-topic")
    levels = split_topic(text)
    if settings.global_cache and levels[:1] == ["origin"]:
        levels[0] = "cache"
    check_topic(levels)
    return levels[0], ".".join(levels[1:])


def split_topic(text: str) -> list[str]:
    """Levels of a topic written with '/' (MQTT's and WIS2's way) or '.' (AMQP's)."""
    return text.split("/") if "/" in text else text.split(".")


def check_topic(levels: list[str]) -> None:
    """NoticeError unless `levels` is a topic of the WIS2 topic hierarchy for data:
    origin|cache/a/wis2/<centre-id>/data/core|recommended/<discipline>/..., lowercase."""
    shown = "/".join(levels)

    def refuse(why: str) -> NoticeError:
        return NoticeError(f"topic {shown!r:.120} is not a WIS2 data topic: {why}",
                           fix="use origin/a/wis2/<centre-id>/data/core/<discipline>/... "
                               "(lowercase letters, digits, - and _ in each level)", rule="wis2-topic")
    for number, level in enumerate(levels, 1):
        if not _LEVEL.fullmatch(level):
            raise refuse(f"level {number} {level!r:.40} " + ("has a dot" if "." in level else
                                                             "is not lowercase letters, digits, - and _"))
    fixed = (("origin", "cache"), ("a",), ("wis2",), None, ("data",), ("core", "recommended"), DISCIPLINES)
    if len(levels) < len(fixed):
        raise refuse(f"it has {len(levels)} levels, fewer than {len(fixed)}")
    for number, (level, allowed) in enumerate(zip(levels, fixed), 1):
        if allowed is not None and level not in allowed:
            raise refuse(f"level {number} is {level!r:.40}, not one of {', '.join(allowed)}")


# --- Decoding ---

def decode(body: bytes, headers: Mapping[str, Any], fields: dict[str, Any] | None = None) -> Notice:
    if len(body) > MAX_MESSAGE:
        raise NoticeError(f"WIS2 message is {len(body)} bytes, over WNM's {MAX_MESSAGE}", rule="wis2-size")
    message = load_json(body) if fields is None else fields
    check(message, len(body))
    properties = dict(message["properties"])
    main = next(link for link in message["links"] if link["rel"] in MAIN_RELATIONS)
    data_id, href = properties["data_id"], main["href"]
    base_url, rel_path = _place(href, data_id)
    pubtime_text = take(properties, "pubtime", str)
    notice = Notice(pubtime=parse_time(pubtime_text, "pubtime"), base_url=base_url, rel_path=rel_path)
    notice.op = Op.DELETE if main["rel"] == "deletion" else Op.WRITE
    notice.size = main.get("length")
    sum_ = properties.pop("integrity", None)
    if sum_ is not None:
        notice.checksum = Checksum(sum_["method"], _digest(sum_["method"], sum_["value"]).hex())
    elif notice.op is Op.WRITE:
        notice.checksum = Checksum("none", "")  # summed on download, never verified
    link_rest = {k: v for k, v in main.items() if k != "length" and not (k == "href" and v == notice.url)}
    if link_rest.get("rel") != "update":
        link_rest.pop("rel", None)
    notice.extra = {"id": message["id"], "geometry": message["geometry"], **properties,
                    "wis2_pubtime": pubtime_text}
    if link_rest:
        notice.extra["wis2_link"] = link_rest
    others = [link for link in message["links"] if link is not main]
    if others:
        notice.extra["links"] = others
    return notice


def with_topic(notice: Notice, exchange: str, topic_text: str) -> Notice:
    """Keep the topic a WIS2 message came on (as '/'-separated levels, the exchange first
    unless the topic has it already) with its notice; its centre-id is the notice's
    source, which a pump's relay files it under (a relay reading a user's own exchange
    puts that user instead)."""
    levels = split_topic(topic_text)
    if levels[:1] not in (["origin"], ["cache"]) and exchange:
        levels.insert(0, exchange)
    notice.extra["wis2_topic"] = "/".join(levels)
    if len(levels) > 3 and levels[2] == "wis2" and USER_NAME.fullmatch(levels[3]) and not notice.source:
        notice.source = levels[3]
    return notice


def _same_place(href: str, data_id: str, notice: Notice) -> bool:
    """Whether `href` still names where `notice` says the data is (a shovel keeps its spelling)."""
    try:
        return _place(href, data_id) == (notice.base_url, notice.rel_path)
    except NoticeError:
        return False


def _place(href: str, data_id: str) -> tuple[str, str]:
    """(base_url, rel_path) of the data: the data_id below the rest of href when href ends
    with it, else href's path below its server."""
    try:
        parts = urllib.parse.urlsplit(href)
    except ValueError as error:
        raise NoticeError(f"WIS2 link {href!r:.80} is not a URL: {error}", rule="wis2-href") from None
    if parts.query or parts.fragment:
        raise NoticeError(f"WIS2 link {href!r:.80} has a query or fragment: dd fetches plain paths",
                          rule="wis2-href")
    path = urllib.parse.unquote(parts.path)
    tail = "/" + data_id.lstrip("/")
    base = path[:-len(tail)] if data_id.strip("/") and path.endswith(tail) else ""
    rel_path = data_id.lstrip("/") if base or path == tail else path.lstrip("/")
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, urllib.parse.quote(base) + "/", "", "")), rel_path


def parse_time(text: str, name: str) -> datetime.datetime:
    """An RFC 3339 time in UTC ('Z' or +00:00); digits past microseconds are dropped."""
    match = _RFC3339.fullmatch(text)
    if match is None or match[4] not in ("Z", "z", "+00:00", "-00:00"):
        raise NoticeError(f"WIS2 property '{name}' is not an RFC 3339 time in UTC: {text!r:.40}",
                          rule="wis2-time")
    fraction = (match[3] or ".0")[1:7].ljust(6, "0")
    try:
        moment = datetime.datetime.strptime(f"{match[1]}T{match[2]}", "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise NoticeError(f"WIS2 property '{name}' is not a valid time: {text!r:.40}",
                          rule="wis2-time") from None
    return moment.replace(microsecond=int(fraction), tzinfo=datetime.timezone.utc)


def _digest(method: str, value: str) -> bytes:
    try:
        digest = base64.b64decode(value, validate=True)
    except (ValueError, binascii.Error):
        raise NoticeError(f"WIS2 integrity value is not base64: {value!r:.40}", rule="wis2-integrity") from None
    if len(digest) != DIGESTS[method]:
        raise NoticeError(f"WIS2 {method} integrity is {len(digest)} bytes, not {DIGESTS[method]}",
                          rule="wis2-integrity")
    return digest


def check(message: dict[str, Any], size: int) -> None:
    """NoticeError naming the first WNM requirement `message` (`size` bytes encoded) breaks."""
    if size > MAX_MESSAGE:
        raise NoticeError(f"WIS2 message is {size} bytes, over WNM's {MAX_MESSAGE}", rule="wis2-size")
    fields = dict(message)
    if "id" not in fields:
        raise NoticeError("WIS2 message has no 'id'", rule="wis2-id")
    message_id = take(fields, "id", str)
    try:
        uuid.UUID(message_id)
    except ValueError:
        raise NoticeError(f"WIS2 message id is not a UUID: {message_id!r:.40}", rule="wis2-id") from None
    if CONFORMANCE not in take(fields, "conformsTo", list):
        raise NoticeError(f"WIS2 message does not conform to {CONFORMANCE}", rule="wis2-conformance")
    if take(fields, "type", str) != "Feature":
        raise NoticeError("WIS2 message type is not 'Feature'", rule="wis2-type")
    if "geometry" not in fields:
        raise NoticeError("WIS2 message has no 'geometry' (null when it has no place)", rule="wis2-geometry")
    check_geometry(fields["geometry"])
    _check_properties(take(fields, "properties", dict))
    _check_links(take(fields, "links", list))


def check_geometry(geometry: Any) -> None:
    """NoticeError unless `geometry` is null, a GeoJSON Point or a Polygon."""
    def position(value: Any) -> bool:
        return (isinstance(value, list) and len(value) >= 2
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in value))
    if geometry is None:
        return
    kind = geometry.get("type") if isinstance(geometry, dict) else None
    coordinates = geometry.get("coordinates") if isinstance(geometry, dict) else None
    if kind == "Point" and position(coordinates):
        return
    if kind == "Polygon" and isinstance(coordinates, list) and all(
            isinstance(ring, list) and len(ring) >= 4 and all(map(position, ring)) for ring in coordinates):
        return
    raise NoticeError(f"WIS2 geometry is not null, a Point or a Polygon: {geometry!r:.80}",
                      rule="wis2-geometry")


def _check_properties(properties: dict[str, Any]) -> None:
    properties = dict(properties)
    parse_time(take(properties, "pubtime", str), "pubtime")
    if not take(properties, "data_id", str):
        raise NoticeError("WIS2 property 'data_id' is empty", rule="wis2-data-id")
    times = [name for name in _TIMES if name in properties]
    if times not in (["datetime"], ["start_datetime", "end_datetime"]):
        raise NoticeError("WIS2 message needs properties.datetime, or start_datetime and end_datetime "
                          f"(not both), it has: {', '.join(times) or 'none'}", rule="wis2-time")
    for name in times:
        if not (name == "datetime" and properties[name] is None):
            parse_time(take(properties, name, str), name)
    integrity_ = take(properties, "integrity", dict, None)
    if integrity_ is not None:
        integrity_ = dict(integrity_)
        method, value = take(integrity_, "method", str), take(integrity_, "value", str)
        if method not in DIGESTS:
            raise NoticeError(f"WIS2 integrity method {method!r:.20} is not allowed "
                              f"(only {', '.join(DIGESTS)})", rule="wis2-integrity")
        _digest(method, value)
    content = take(properties, "content", dict, None)
    if content is not None:
        content = dict(content)
        encoding, value = take(content, "encoding", str), take(content, "value", str)
        take(content, "size", int)
        if encoding not in ("utf-8", "base64", "gzip"):
            raise NoticeError(f"WIS2 content encoding {encoding!r:.20} is not utf-8, base64 or gzip",
                              rule="wis2-content")
        if len(value.encode("utf-8")) > MAX_CONTENT:
            raise NoticeError(f"WIS2 inline content is over {MAX_CONTENT} bytes", rule="wis2-content")


def _check_links(links: list[Any]) -> None:
    if not links or not all(isinstance(link, dict) for link in links):
        raise NoticeError("WIS2 'links' must be a non-empty list of objects", rule="wis2-links")
    for link in links:
        link = dict(link)
        href = take(link, "href", str)
        take(link, "rel", str)
        scheme = href.partition(":")[0].lower()
        if scheme not in SCHEMES or not href.startswith(f"{href[:len(scheme)]}://"):
            raise NoticeError(f"WIS2 link {href!r:.80} is not {', '.join(SCHEMES)}", rule="wis2-href")
        length = take(link, "length", int, None)
        if length is not None and length < 0:
            raise NoticeError(f"WIS2 link length is negative: {length}", rule="wis2-links")
    main = [link for link in links if link["rel"] in MAIN_RELATIONS]
    if len(main) != 1:
        raise NoticeError(f"WIS2 message has {len(main)} links with rel canonical, update or deletion, "
                          "not exactly one", rule="wis2-links")
    if main[0]["rel"] != "deletion" and "length" not in main[0]:
        raise NoticeError(f"WIS2 {main[0]['rel']} link has no 'length'", rule="wis2-links")
