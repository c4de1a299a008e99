"""Wire formats: dd's v02 JSON and Sarracenia's v02 and v03, checked against
each other, against hostile input, and against the real sr3 (in-process for
its codecs, as a peer over a real broker for its commands)."""
import base64
import contextlib
import dataclasses
import datetime
import hashlib
import json
import os
import time
import types
import urllib.parse

import pytest
import sarracenia
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dd.core import checksum as checksum_mod
from dd import broker
from dd.core import formats, parts
from dd.core.credentials import Url
from dd.core.errors import NoticeError
from dd.core.formats import sr_v02, sr_v03, v02, wis2
from dd.core.notice import Checksum, Notice, Op, Part, validate

from sarracenia.postformat.v02 import V02 as SrV02  # noqa: N811 - sr3's classes, named for the tests
from sarracenia.postformat.v03 import V03 as SrV03  # noqa: N811
from tests.support.sr3peer import Sr3Peer

UTC = datetime.timezone.utc
SR_FORMATS = ("sr_v02", "sr_v03")
ALL_FORMATS = tuple(f for f in formats.FORMATS if f != "wis2")  # WIS2: tests/test_wis2.py
T0 = datetime.datetime(2019, 1, 20, 4, 50, 18, 314854, tzinfo=UTC)


def digest(method, data=b"hello\n"):
    return hashlib.new(method, data).hexdigest()


def b64(hex_value):
    return base64.b64encode(bytes.fromhex(hex_value)).decode()


def notice(**changes):
    fields = dict(pubtime=T0, base_url="http://example.com/pub/", rel_path="a/b/c.txt",
                  size=6, checksum=Checksum("sha512", digest("sha512")))
    fields.update(changes)
    return Notice(**fields)


def roundtrip(n, fmt):
    message = formats.encode(n, fmt)
    return formats.decode(message.body, message.headers)


def refused(body, headers=None):
    """The rule a message is refused by, through the full decode-and-validate path."""
    with pytest.raises(NoticeError) as caught:
        formats.decode(body, headers or {})
    return caught.value.rule


def v03_body(**changes):
    fields = {"pubTime": "20190120T045018.314854383", "baseUrl": "http://example.com/pub/",
              "relPath": "a/b/c.txt", "size": 6,
              "identity": {"method": "md5", "value": b64(digest("md5"))}}
    fields.update(changes)
    return json.dumps({k: v for k, v in fields.items() if v is not None}).encode()


V02_LINE = b"20190120045018.314854383 http://example.com/pub/ a/b/c.txt"
V02_HEADERS = {"sum": "d," + digest("md5"), "parts": "1,6,1,0,0"}


# --- hypothesis strategies: notices dd would accept -----------------------------------

# '%' stays out of names: sr v02 escapes only ' ' and '#', so "%20" in a name is ambiguous there.
_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"), exclude_characters="/%,")
words = st.text(_chars, min_size=1, max_size=12)
rel_paths = st.lists(words, min_size=1, max_size=4).map("/".join)
moments = st.datetimes(min_value=datetime.datetime(1900, 1, 1),
                       max_value=datetime.datetime(9999, 12, 31), timezones=st.just(UTC))
digests = st.sampled_from(["sha512", "md5"]).flatmap(
    lambda m: st.binary(min_size=8, max_size=8).map(lambda b, m=m: Checksum(m, digest(m, b))))
none_sums = st.text(_chars, max_size=10).map(lambda v: Checksum("none", v))
extras = st.dictionaries(st.from_regex(r"x_[a-z]{1,8}", fullmatch=True),
                         st.one_of(st.text(_chars, max_size=10), st.integers(-9, 10**12),
                                   st.booleans()), max_size=3)


@st.composite
def notices(draw, checksums=st.one_of(digests, none_sums)):  # noqa: B008 - a strategy, made once
    op = draw(st.sampled_from(list(Op)))
    rel_path = draw(rel_paths)
    n = Notice(pubtime=draw(moments), base_url="http://" + draw(words) + "/" + draw(rel_paths),
               rel_path=rel_path, source=draw(st.one_of(st.just(""), words)),
               from_cluster=draw(st.one_of(st.just(""), words)),
               to_clusters=draw(st.lists(words, max_size=3)), op=op,
               mtime=draw(st.none() | moments), atime=draw(st.none() | moments),
               mode=draw(st.none() | st.integers(0, 0o7777)), extra=draw(extras))
    if op in (Op.WRITE, Op.RENAME) or draw(st.booleans()):
        n.size = draw(st.integers(0, 1 << 40))
        n.checksum = draw(checksums)
    if op is Op.LINK:
        n.link_target = draw(rel_paths)
    if op is Op.RENAME or (op is Op.LINK and draw(st.booleans())):
        n.rename_from = draw(rel_paths)
    return validate(n)


@st.composite
def part_notices(draw):
    size = draw(st.integers(1, 1 << 40))
    block_size = max(draw(st.integers(1, size)), -(-size // 200))  # manifests of 200 blocks at most
    count, remainder = parts.layout(size, block_size)
    part = Part(block_size, count, remainder, draw(st.integers(0, count - 1)), draw(digests))
    n = draw(notices(checksums=digests))
    return validate(dataclasses.replace(n, op=Op.WRITE, size=size, checksum=draw(digests),
                                        part=part, link_target=None, rename_from=None))


def sr_expected(n, fmt):
    """What a notice becomes after a trip through a Sarracenia format (see the module docs)."""
    n = dataclasses.replace(n, extra=dict(n.extra))
    if fmt == "sr_v02" and n.op in (Op.DELETE, Op.LINK):
        n.checksum = None  # v02's sum says delete or link instead
    if n.part is not None:
        value = n.part.checksum.value
        tag = Checksum("none", b64(value) if fmt == "sr_v03" else value)
        n.part = dataclasses.replace(n.part, checksum=tag)
        n.checksum = tag
    return n


# --- round trips -------------------------------------------------------------------------

@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(notices())
def test_dd_v02_round_trip_keeps_every_field(n):
    assert roundtrip(n, "v02") == n


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(notices(), st.sampled_from(SR_FORMATS))
def test_sr_round_trip_keeps_every_field_it_can_carry(n, fmt):
    assert roundtrip(n, fmt) == sr_expected(n, fmt)


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(part_notices(), st.sampled_from(ALL_FORMATS))
def test_parts_keep_their_geometry_in_every_format(n, fmt):
    expected = n if fmt == "v02" else sr_expected(n, fmt)
    assert roundtrip(n, fmt) == expected


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_each_format_is_recognised_by_its_own_codec(fmt):
    message = formats.encode(notice(), fmt)
    recognised = [name for name, codec in formats.FORMATS.items()
                  if codec.recognizes(message.body, message.headers)]
    assert recognised[0] == fmt
    assert message.content_type == formats.FORMATS[fmt].CONTENT_TYPE


@pytest.mark.parametrize("fmt,prefix", [("sr_v03", "v03"), ("sr_v02", "v02.post")])
def test_sr_topics_follow_sr3_defaults(fmt, prefix):
    assert formats.encode(notice(), fmt).topic == f"{prefix}.a.b"


def test_dd_name_checksum_travels_as_sr_md5name_and_comes_back_as_dd_name():
    n = notice(checksum=Checksum("name", checksum_mod.of_name("a/b/c.txt")))
    v03_message = formats.encode(n, "sr_v03")
    assert "identity" not in json.loads(v03_message.body)  # sr3's way of saying md5name
    v02_message = formats.encode(n, "sr_v02")
    assert v02_message.headers["sum"] == "n," + hashlib.md5(b"c.txt").hexdigest()
    for message in (v03_message, v02_message):
        assert formats.decode(message.body, message.headers).checksum == n.checksum


@pytest.mark.parametrize("method,value", [("arbitrary", "tag-7"), ("cod", "sha512"),
                                          ("random", "0042"), ("futurehash", "xyz")])
def test_sr_checksums_dd_cannot_verify_become_none_keeping_their_value(method, value):
    decoded = formats.decode(v03_body(identity={"method": method, "value": value}))
    assert decoded.checksum == Checksum("none", value)
    assert not checksum_mod.verifiable(decoded.checksum.method)


@pytest.mark.parametrize("letter,value", [("a", "tag-7"), ("z", "s"), ("0", "0042")])
def test_sr_v02_sums_dd_cannot_verify_become_none_keeping_their_value(letter, value):
    decoded = formats.decode(V02_LINE, {**V02_HEADERS, "sum": f"{letter},{value}"})
    assert decoded.checksum == Checksum("none", value)


def test_sr3_relayed_v02_sums_with_line_breaks_are_read():
    wrapped = base64.encodebytes(bytes.fromhex(digest("sha512"))).decode().strip()
    assert "\n" in wrapped
    decoded = formats.decode(v03_body(identity={"method": "sha512", "value": wrapped}))
    assert decoded.checksum == Checksum("sha512", digest("sha512"))


def test_sha256_from_a_v03_peer_is_read_and_verifiable():
    value = digest("sha256")
    decoded = formats.decode(v03_body(identity={"method": "sha256", "value": b64(value)}))
    assert decoded.checksum == Checksum("sha256", value)


@pytest.mark.parametrize("fmt", SR_FORMATS)
@pytest.mark.parametrize("method", ["sha256", "xxh128"])
def test_checksums_without_a_sarracenia_form_are_refused_with_the_fix(fmt, method):
    with pytest.raises(NoticeError) as caught:
        formats.encode(notice(checksum=Checksum(method, digest("md5"))), fmt)
    assert caught.value.rule == "format"
    assert f"use checksum sha512 or md5 with post_format {fmt}" in str(caught.value)


def test_sr_times_lose_nanoseconds_and_gain_zeros():
    assert formats.decode(v03_body()).pubtime == T0
    sr_v03_body = json.loads(formats.encode(notice(), "sr_v03").body)
    assert sr_v03_body["pubTime"] == "20190120T045018.314854000"
    assert formats.encode(notice(), "sr_v02").body.split()[0] == b"20190120045018.314854000"


@pytest.mark.parametrize("text,micro", [("20190120T045018", 0), ("20190120045018.5", 500000),
                                        ("20190120T045018.0708837509", 70883),
                                        ("20190120T045018.5e-05", 5), ("20190120T045018e-05", 0),
                                        # found by tools/fuzz.py: Decimal rounded this up to a second
                                        ("20190120T045018." + "9" * 80, 999999)])
def test_every_time_sr3_writes_is_read(text, micro):
    # sr3 formats the fraction with '%.9g': tiny fractions come out with an exponent.
    assert sr_v03.parse_time(text, "pubTime") == T0.replace(microsecond=micro)


def test_sr_v02_escapes_spaces_and_hashes_as_sarracenia_does():
    n = notice(base_url="http://example.com/a b/", rel_path="d #1/f 2#.txt")
    message = formats.encode(n, "sr_v02")
    assert message.body.split(b" ")[1:] == [b"http://example.com/a%20b/", b"d%20%231/f%202%23.txt"]
    assert formats.decode(message.body, message.headers).rel_path == "d #1/f 2#.txt"


def test_sr_v02_headers_carry_what_sr3_reads():
    n = notice(mtime=T0, mode=0o644, source="alice", from_cluster="here", to_clusters=["c1", "c2"],
               checksum=Checksum("md5", digest("md5")))
    assert formats.encode(n, "sr_v02").headers == {
        "sum": "d," + digest("md5"), "parts": "1,6,1,0,0", "mtime": "20190120045018.314854000",
        "mode": "644", "source": "alice", "from_cluster": "here", "to_clusters": "c1,c2"}


@pytest.mark.parametrize("fmt", SR_FORMATS)
def test_unknown_fields_pass_through(fmt):
    n = notice(extra={"contentType": "text/plain", "x_count": 3})
    assert roundtrip(n, fmt).extra == n.extra


def test_sr_v02_keeps_only_plain_header_values_and_drops_the_topic():
    headers = {**V02_HEADERS, "topic": "v02.post.a.b", "filename": "c.txt", "x-death": [{"q": 1}],
               "flag": True}
    assert formats.decode(V02_LINE, headers).extra == {"filename": "c.txt", "flag": True}


# --- operations ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", SR_FORMATS)
@pytest.mark.parametrize("n", [
    notice(op=Op.DELETE, size=None, checksum=None),
    notice(op=Op.LINK, size=None, checksum=None, link_target="../x/target"),
    notice(op=Op.RENAME, rename_from="a/b/old.txt"),
    notice(op=Op.LINK, size=None, checksum=None, link_target="t", rename_from="a/b/old"),
], ids=["delete", "link", "rename", "renamed-link"])
def test_operations_map_both_ways(fmt, n):
    assert roundtrip(n, fmt) == n


def test_sr_v02_operation_sums_are_computed_as_sarracenia_does():
    delete = formats.encode(notice(op=Op.DELETE, checksum=None, size=None), "sr_v02")
    assert delete.headers["sum"] == "R," + hashlib.sha512(b"c.txt").hexdigest()
    link = formats.encode(notice(op=Op.LINK, checksum=None, size=None, link_target="t"), "sr_v02")
    assert link.headers["sum"] == "L," + hashlib.sha512(b"t").hexdigest()
    assert link.headers["link"] == "t"


def test_sr_v03_write_without_identity_is_announced_by_name():
    decoded = formats.decode(v03_body(identity=None))
    assert decoded.checksum == Checksum("name", checksum_mod.of_name("a/b/c.txt"))


def test_sr3_block_notices_become_dd_parts():
    manifest = {"0": {"size": 10, "identity": "AAA="}, "1": {"size": 10, "identity": "BBB="},
                "2": {"size": 5, "identity": "CCC="}}
    body = v03_body(size=10, identity={"method": "sha512", "value": "BBB="},
                    blocks={"method": "inplace", "size": 10, "number": 1, "manifest": manifest})
    decoded = formats.decode(body)
    assert decoded.size == 25
    assert decoded.part == Part(10, 3, 5, 1, Checksum("none", "BBB="))
    assert decoded.checksum == Checksum("none", "BBB=")


# --- malformed input ------------------------------------------------------------------------

@pytest.mark.parametrize("body,rule", [
    (b'{"rel_path": ', "json"),
    (b'{"rel_path": "a", "op": "write"}', "missing-field"),
    (json.dumps({"rel_path": "a", "op": "explode"}).encode(), "op"),
    (json.dumps({"rel_path": "a", "op": "write", "pubtime": "yesterday"}).encode(), "time"),
    (b"\xff\xfe", "format"),
    (b"", "format"),
    (b"[1, 2]", "format"),
], ids=["syntax", "missing", "op", "time", "binary", "empty", "array"])
def test_dd_v02_refuses_malformed_notices(body, rule):
    assert refused(body) == rule


@pytest.mark.parametrize("codec", [v02, sr_v03])
@pytest.mark.parametrize("body,rule", [(b"[1]", "json"), (b'"a"', "json"), (b"\xff", "encoding")])
def test_json_codecs_refuse_what_is_not_a_json_object(codec, body, rule):
    with pytest.raises(NoticeError) as caught:
        codec.decode(body, {})
    assert caught.value.rule == rule


def _dd_v02(**changes):
    fields = json.loads(formats.encode(notice(), "v02").body)
    fields.update(changes)
    return json.dumps(fields).encode()


@pytest.mark.parametrize("changes,rule", [
    ({"size": "6"}, "type"),
    ({"mode": "rwx"}, "mode"),
    ({"checksum": {"method": "md5"}}, "missing-field"),
    ({"part": {"block_size": 4, "block_count": 1, "remainder": 0, "block_number": 0,
               "checksum": {"method": "md5", "value": "00"}}}, "parts"),
    ({"to_clusters": "c1"}, "type"),
    ({"rel_path": "a/\x1b[2Jb"}, "control-character"),
])
def test_dd_v02_refuses_bad_fields(changes, rule):
    assert refused(_dd_v02(**changes)) == rule


@pytest.mark.parametrize("changes,rule", [
    ({"pubTime": "2019-01-20"}, "time"),
    ({"pubTime": None}, "missing-field"),
    ({"relPath": 7}, "type"),
    ({"relPath": ""}, "empty-path"),
    ({"size": "6"}, "type"),
    ({"size": -1}, "size"),
    ({"mode": "9"}, "mode"),
    ({"to_clusters": {"c": 1}}, "type"),
    ({"identity": {"method": "md5", "value": "%%%"}}, "checksum"),
    ({"identity": {"method": "md5", "value": b64(digest("sha512"))}}, "checksum"),
    ({"identity": {"value": "x"}}, "missing-field"),
    ({"identity": "md5"}, "type"),
    ({"fileOp": {"directory": ""}}, "op"),
    ({"fileOp": {"remove": "", "directory": ""}}, "op"),
    ({"fileOp": {"hlink": "x"}}, "op"),
    ({"fileOp": {"explode": ""}}, "op"),
    ({"fileOp": {"link": "t", "remove": ""}}, "op"),
    ({"fileOp": {"link": 3}}, "type"),
    ({"retrievePath": "elsewhere/c.txt"}, "unsupported"),
    ({"blocks": {"method": "partitioned", "size": 3, "number": 0, "manifest": {}}}, "parts"),
    ({"blocks": {"method": "inplace", "size": 3, "number": 0, "manifest": {}}}, "parts"),
    ({"blocks": {"method": "inplace", "size": 3, "number": 0,
                 "manifest": {"0": {"size": 3}, "2": {"size": 3}}}}, "parts"),
    ({"blocks": {"method": "inplace", "size": 3, "number": 0, "manifest": {"0": 3}}}, "parts"),
    ({"blocks": {"method": "inplace", "size": 3, "number": 0,
                 "manifest": {"0": {"size": 3}, "1": {"size": 3}}}}, "parts"),  # size 6 != block 3
    ({"size": 3, "blocks": {"method": "inplace", "size": 3, "number": 5,
                            "manifest": {"0": {"size": 3}}}}, "parts"),
    ({"size": 3, "blocks": {"method": "inplace", "size": 3, "number": 0,
                            "manifest": {"0": {"size": 3}, "1": {"size": 7}}}}, "parts"),
])
def test_sr_v03_refuses_malformed_notices(changes, rule):
    assert refused(v03_body(**changes)) == rule


@pytest.mark.parametrize("body,headers,rule", [
    (b"20190120045018.3 http://example.com/pub/", V02_HEADERS, "format"),
    (b"20190120045018.3 http://e.com/ a b", V02_HEADERS, "format"),
    (b"2019012004501x.3 http://e.com/ a", V02_HEADERS, "time"),
    (V02_LINE, {"parts": "1,6,1,0,0"}, "missing-field"),
    (V02_LINE, {**V02_HEADERS, "sum": 5}, "type"),
    (V02_LINE, {**V02_HEADERS, "sum": "q,00"}, "checksum"),
    (V02_LINE, {**V02_HEADERS, "sum": "d,xyz"}, "checksum"),
    (V02_LINE, {**V02_HEADERS, "sum": "s," + digest("md5")}, "checksum"),
    (V02_LINE, {**V02_HEADERS, "sum": "m,00"}, "op"),
    (V02_LINE, {**V02_HEADERS, "sum": "r,00"}, "op"),
    (V02_LINE, {**V02_HEADERS, "sum": "L,00"}, "missing-field"),
    (V02_LINE, {**V02_HEADERS, "parts": "1,6"}, "parts"),
    (V02_LINE, {**V02_HEADERS, "parts": "1," + "9" * 5000 + ",1,0,0"}, "parts"),
    (V02_LINE, {**V02_HEADERS, "parts": "p,4,2,2,0"}, "parts"),
    (V02_LINE, {**V02_HEADERS, "parts": "i,4,2,5,0"}, "parts"),
    (V02_LINE, {**V02_HEADERS, "mtime": "now"}, "time"),
    (V02_LINE, {**V02_HEADERS, "mode": "0x1ff"}, "mode"),
    (V02_LINE, {**V02_HEADERS, "to_clusters": 3}, "type"),
    (V02_LINE + b"\xff", V02_HEADERS, "encoding"),
    (b"hello world", {}, "format"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_sr_v02_refuses_malformed_notices(body, headers, rule):
    assert refused(body, headers) == rule


def test_refusals_name_the_field_in_one_line():
    with pytest.raises(NoticeError) as caught:
        formats.decode(V02_LINE, {**V02_HEADERS, "sum": "L,00"})
    message = str(caught.value)
    assert "'link' header" in message and "post_format v03" in message and "\n" not in message


# --- fuzzing: nothing but NoticeError ever escapes decode ---------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)
header_values = st.one_of(st.text(max_size=30), st.integers(), st.booleans(), st.none(),
                          st.binary(max_size=10), st.lists(st.text(max_size=5), max_size=3),
                          st.floats())
v02_header_names = st.sampled_from(["sum", "parts", "mtime", "atime", "mode", "source", "link",
                                    "oldname", "to_clusters", "from_cluster", "topic"])
header_dicts = st.dictionaries(v02_header_names | st.text(max_size=8), header_values, max_size=6)
V03_KEYS = ["pubTime", "baseUrl", "relPath", "size", "identity", "fileOp", "blocks", "mtime",
            "mode", "to_clusters", "source", "integrity"]


def decode_or_refuse(body, headers):
    for codec in (v02, sr_v02, sr_v03, wis2):  # every codec, even on messages it would not claim
        try:
            codec.decode(body, dict(headers))
        except NoticeError:
            pass
    try:
        return formats.decode(body, headers)
    except NoticeError as error:
        assert error.rule and "\n" not in str(error)


@settings(max_examples=300)
@given(st.binary(max_size=200), header_dicts)
def test_fuzz_any_bytes(body, headers):
    decode_or_refuse(body, headers)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(V03_KEYS), json_values, max_size=8), json_values)
def test_fuzz_v03_fields_of_any_json_type(changes, blocks):
    body = json.loads(v03_body())
    body.update(changes)
    if isinstance(blocks, dict):
        body.setdefault("blocks", {"method": "inplace", "size": 3, "number": 0, "manifest": blocks})
    decode_or_refuse(json.dumps(body).encode(), {})


@settings(max_examples=300)
@given(st.lists(st.text(max_size=30), min_size=1, max_size=5), header_dicts)
def test_fuzz_v02_lines_and_headers(words_, headers):
    decode_or_refuse(" ".join(["20190120045018.3", *words_]).encode(), {**V02_HEADERS, **headers})


@settings(max_examples=200)
@given(st.dictionaries(st.sampled_from(["pubtime", "base_url", "op", "size", "checksum", "part",
                                        "mode", "to_clusters", "mtime", "link_target"]),
                       json_values, max_size=6))
def test_fuzz_dd_v02_fields_of_any_json_type(changes):
    decode_or_refuse(_dd_v02(**changes), {})


def test_deeply_nested_json_is_refused():
    assert refused(b'{"relPath": ' + b"[" * 100000 + b"]" * 100000 + b"}") in ("nesting", "json")


# --- cross-check with sarracenia's own codecs, in process ---------------------------------



def sr3_options(prefix):
    broker = types.SimpleNamespace(url=urllib.parse.urlparse("amqp://localhost/"))
    return {"publishers": [{"broker": broker, "topicPrefix": prefix.split(".")}],
            "publisher_index": 0}


@pytest.mark.parametrize("importer,fmt", [(SrV03, "sr_v03"), (SrV02, "sr_v02")])
@pytest.mark.parametrize("method", ["sha512", "md5"])
def test_sr3_imports_what_dd_encodes(importer, fmt, method):
    n = notice(checksum=Checksum(method, digest(method)), mtime=T0, mode=0o640, source="alice",
               from_cluster="here")
    message = formats.encode(n, fmt)
    msg = importer.importMine(message.body.decode(), message.headers, {})
    assert msg.validate()
    assert (msg["baseUrl"], msg["relPath"]) == (n.base_url, n.rel_path)
    # sr3 reads v02 sums through the base64 codec, which wraps lines at 76 characters.
    assert msg["identity"]["method"] == method
    assert msg["identity"]["value"].replace("\n", "") == b64(n.checksum.value)
    assert msg["size"] == 6 and msg["mode"] == "640" and msg["source"] == "alice"
    assert sarracenia.timestr2flt(msg["pubTime"]) == pytest.approx(T0.timestamp(), abs=1e-6)
    assert sarracenia.timestr2flt(msg["mtime"]) == pytest.approx(T0.timestamp(), abs=1e-6)


@pytest.mark.parametrize("importer,fmt", [(SrV03, "sr_v03"), (SrV02, "sr_v02")])
@pytest.mark.parametrize("n,file_op", [
    (notice(op=Op.DELETE, size=None, checksum=None), {"remove": ""}),
    (notice(op=Op.LINK, size=None, checksum=None, link_target="t"), {"link": "t"}),
    (notice(op=Op.RENAME, rename_from="a/b/old"), {"rename": "a/b/old"}),
], ids=["delete", "link", "rename"])
def test_sr3_imports_dd_operations(importer, fmt, n, file_op):
    message = formats.encode(n, fmt)
    assert importer.importMine(message.body.decode(), message.headers, {})["fileOp"] == file_op


def test_sr3_imports_dd_parts_with_the_manifest_it_needs():
    n = notice(size=25, part=Part(10, 3, 5, 2, Checksum("sha512", digest("sha512"))))
    msg = SrV03.importMine(formats.encode(n, "sr_v03").body.decode(), {}, {})
    assert msg["size"] == 5  # sr3 sizes block notices by the block
    assert msg["blocks"]["number"] == 2
    assert [msg["blocks"]["manifest"][i]["size"] for i in range(3)] == [10, 10, 5]


def sr3_message(**fields):
    """A message as sr3 hands it to its exporters: its private fields already dropped."""
    msg = sarracenia.Message()
    msg.update({"pubTime": "20190120T045018.314854383", "baseUrl": "http://example.com/pub/",
                "relPath": "a/b/c.txt", **fields})
    for key in msg.pop("_deleteOnPost"):
        msg.pop(key, None)
    return msg


@pytest.mark.parametrize("exporter,prefix", [(SrV03, "v03"), (SrV02, "v02.post")])
@pytest.mark.parametrize("fields,op", [
    ({"fileOp": {"remove": ""}}, Op.DELETE),
    ({"fileOp": {"rename": "a/b/old"}, "size": 6,
      "identity": {"method": "md5", "value": b64(digest("md5"))}}, Op.RENAME),
    ({"size": 6, "identity": {"method": "arbitrary", "value": "tag"}}, Op.WRITE),
], ids=["remove", "rename", "arbitrary"])
def test_dd_reads_what_sr3_exports(exporter, prefix, fields, op):
    body, headers, content_type = exporter.exportMine(sr3_message(**fields), sr3_options(prefix))
    headers.pop("topic")  # sr3 routes by it and deletes it before publishing
    decoded = formats.decode(body.encode(), headers)
    assert (decoded.op, decoded.rel_path, decoded.pubtime) == (op, "a/b/c.txt", T0)


def test_sr3_v02_link_notices_are_refused_for_want_of_a_target():
    body, headers, _ = SrV02.exportMine(sr3_message(fileOp={"link": "t"}), sr3_options("v02.post"))
    headers.pop("topic")
    assert headers["sum"].startswith("L,") and "link" not in headers
    assert refused(body.encode(), headers) == "missing-field"


# --- the real sr3 as a peer over a real broker, dd on the other end through dd.broker ------

@contextlib.contextmanager
def dd_endpoints(broker_url, exchange):
    """dd's publisher, with `exchange` declared (sr3 binds to exchanges, never makes them), and a
    function returning the next delivery dd's consumer gets from all of it."""
    url = Url.parse(broker_url)
    publisher = broker.amqp.Publisher(url)
    consumer = broker.amqp.Consumer(url, broker.Subscription(f"q_guest.dd_{exchange}", exchange, ("#",)))
    publisher.open()
    publisher.declare_exchange(exchange)
    consumer.start()

    def receive(timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for delivery in consumer.fetch(0.2):
                consumer.ack([delivery])
                return delivery
        raise AssertionError(f"dd received nothing from {exchange} within {timeout}s")
    try:
        yield publisher, receive
    finally:
        consumer.delete()
        consumer.close()
        publisher.close()


def announce(publisher, exchange, notices_and_formats):
    for n, fmt in notices_and_formats:
        publisher.publish(exchange, formats.encode(n, fmt))
    assert publisher.wait(10) == []


@pytest.mark.broker
def test_sr3_post_is_read_by_dd(tmp_path, broker_url, exchange):
    data = tmp_path / "data"
    (data / "dir one").mkdir(parents=True)
    path = data / "dir one" / "f #1.txt"
    path.write_bytes(b"hello\n")
    stat = os.stat(path)
    runs = [(None, "v03", "sha512"), (None, "v03", "md5"),
            ("v02", "v02.post", "md5"), ("v02", "v02.post", "sha512")]
    with dd_endpoints(broker_url, exchange) as (_, receive), \
            Sr3Peer(tmp_path / "home", broker_url) as peer:
        for post_format, prefix, method in runs:
            peer.post([path], exchange=exchange, post_base_url="http://example.com/",
                      post_base_dir=str(data), checksum=method, post_format=post_format,
                      topic_prefix=None if post_format is None else prefix)
            delivery = receive()
            decoded = formats.decode(delivery.body, delivery.headers)
            what = f"{post_format or 'v03'}/{method}"
            assert delivery.topic == f"{prefix}.dir one", what
            assert decoded.base_url == "http://example.com/", what
            assert decoded.rel_path == "dir one/f #1.txt", what
            assert decoded.checksum == Checksum(method, digest(method)), what
            assert (decoded.size, decoded.op, decoded.source) == (6, Op.WRITE, "guest"), what
            assert decoded.mode == stat.st_mode & 0o7777, what
            mtime = datetime.datetime.fromtimestamp(stat.st_mtime, UTC)
            assert abs(decoded.mtime - mtime) < datetime.timedelta(microseconds=2), what


@pytest.mark.broker
def test_sr3_subscribe_downloads_what_dd_announces(tmp_path, broker_url, exchange):
    source, target = tmp_path / "source", tmp_path / "target"
    (source / "d").mkdir(parents=True)
    # sr3 3.3.1 reads v02 paths without undoing their %20/%23 (v2 did): no space or '#' in v02.
    contents = {"d/v03 #file.txt": (b"three\n", "sr_v03"), "d/v02_file.txt": (b"two\n", "sr_v02")}
    for rel_path, (data, _) in contents.items():
        (source / rel_path).write_bytes(data)
    with dd_endpoints(broker_url, exchange) as (publisher, _), \
            Sr3Peer(tmp_path / "home", broker_url) as peer:
        peer.mirror("fromdd", exchange, target, [("messageCountMax", 2), ("logStdout", "on")])
        announce(publisher, exchange, [
            (notice(base_url=f"file:{source}/", rel_path=rel_path, size=len(data),
                    checksum=Checksum("md5", digest("md5", data))), fmt)
            for rel_path, (data, fmt) in contents.items()])
        run = peer.subscribe_foreground("fromdd")
        run.wait(timeout=20)
    for rel_path, (data, _) in contents.items():
        assert (target / rel_path).read_bytes() == data, run.output[-2000:]


@pytest.mark.broker
def test_sr3_daemon_applies_dd_deletes_and_links(tmp_path, broker_url, exchange):
    target = tmp_path / "target"
    (target / "d").mkdir(parents=True)
    deleted, linked = target / "d" / "old.txt", target / "d" / "lnk"
    deleted.write_text("stale")
    with dd_endpoints(broker_url, exchange) as (publisher, _), \
            Sr3Peer(tmp_path / "home", broker_url) as peer:
        peer.mirror("ops", exchange, target)
        peer.start("subscribe", "ops")
        announce(publisher, exchange, [
            (notice(op=Op.DELETE, rel_path="d/old.txt", size=None, checksum=None), "sr_v02"),
            (notice(op=Op.LINK, rel_path="d/lnk", size=None, checksum=None, link_target="old.txt"),
             "sr_v03")])
        deadline = time.monotonic() + 15
        while (deleted.exists() or not linked.is_symlink()) and time.monotonic() < deadline:
            time.sleep(0.1)
        peer.stop("subscribe", "ops")
        log = peer.log("subscribe", "ops")
    assert not deleted.exists(), log[-2000:]
    assert os.readlink(linked) == "old.txt", log[-2000:]


def test_a_value_that_names_another_formats_key_does_not_change_the_format():
    # Found by hypothesis: sr_v03 with a value "rel_path" was once taken for dd's v02.
    message = formats.encode(notice(from_cluster="rel_path", source='"rel_path"'), "sr_v03")
    assert formats.decode(message.body).from_cluster == "rel_path"
    body = json.loads(formats.encode(notice(), "v02").body)
    body["extra"] = {"relPath": "x"}
    assert formats.decode(json.dumps(body).encode()).rel_path == notice().rel_path
