"""WIS2 notification messages (post_format wis2): what dd writes is valid WNM for the schema
and for pywis-pubsub, what breaks WNM is refused by name, and dd mirrors and relays them
over a real RabbitMQ.  (pywis-pubsub publishes over MQTT only: its messages are made with
its own create_message and put on the AMQP broker as they are.)"""
import base64
import dataclasses
import datetime
import hashlib
import importlib
import json
import os
import urllib.parse
import pathlib
import uuid

import amqp
import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dd.core import formats, options
from dd.core.credentials import Url
from dd.core.errors import NoticeError
from dd.core.formats import wis2
from dd.core.notice import Checksum, Notice, Op
from dd.store import nodupe
from tests.support.pump import compare, manifest, wait_for
from tests.test_mirror import make_tree
from tests.test_watch import Watcher

# The modules: pywis_pubsub's package attributes of the same names are its click commands.
ets, publish, verification = (importlib.import_module(f"pywis_pubsub.{name}")
                              for name in ("ets", "publish", "verification"))
# WMO's JSON schema of WNM is not shipped here (no package carries it, and it is WMO's):
# where `pywis-pubsub schema sync` has cached it, or DD_WNM_SCHEMA names a copy, every
# message is validated against it too; pywis-pubsub's ETS requirements run always.
SCHEMA_FILE = pathlib.Path(os.environ.get("DD_WNM_SCHEMA") or importlib.import_module("pywis_pubsub.schema")
                           .MESSAGE_SCHEMA)
SCHEMA = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()),
                                         format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER) \
    if SCHEMA_FILE.exists() else None
TOPIC = "origin/a/wis2/ca-eccc-msc/data/core/weather/surface-based-observations/synop"
#: On AMQP, as on MQTT, a WIS2 topic's first level is the exchange.
EXCHANGE, ROUTING_KEY = "origin", TOPIC.replace("/", ".")[len("origin."):]
WHEN = datetime.datetime(2026, 12, 3, 8, 1, 16, 123456, tzinfo=datetime.timezone.utc)


def sha(method, data=b"hello\n"):
    return hashlib.new(method.replace("-", "_"), data).hexdigest()


def notice(**changes):
    fields = dict(pubtime=WHEN, base_url="https://data.example/wis2/", rel_path="synop/a b.bufr",
                  size=6, checksum=Checksum("sha512", sha("sha512")))
    fields.update(changes)
    return Notice(**fields)


def valid_wnm(body):
    """Both validators pywis-pubsub users rely on: the WNM schema, and pywis-pubsub's ETS."""
    message = json.loads(body)
    if SCHEMA is not None:
        errors = [f"{e.json_path}: {e.message}" for e in SCHEMA.iter_errors(message)]
        assert not errors, errors
    failed = [result for result in requirements(ets.WNMTestSuite(message)) if result["code"] == "FAILED"]
    assert not failed, failed
    return message


def requirements(suite):
    """The results of pywis-pubsub's ETS requirements but its schema validation (see SCHEMA)."""
    return [getattr(suite, name)() for name in dir(suite)
            if name.startswith("test_requirement") and not name.endswith("validation")]


# --- What dd writes ---

paths = st.lists(st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
                 .filter(lambda w: w not in (".", "..") and "/" not in w), min_size=1, max_size=4)
points = st.lists(st.floats(-180, 180, allow_nan=False), min_size=2, max_size=3).map(
    lambda c: {"type": "Point", "coordinates": c})


@st.composite
def notices(draw):
    method = draw(st.sampled_from(sorted(wis2.DIGESTS)))
    data = draw(st.binary(max_size=64))
    op = draw(st.sampled_from([Op.WRITE, Op.DELETE]))
    pubtime = draw(st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2100, 1, 1),
                                timezones=st.just(datetime.timezone.utc)))
    n = notice(pubtime=pubtime, rel_path="/".join(draw(paths)), op=op,
               base_url=draw(st.sampled_from(["https://data.example/", "http://h:8080/a%20b/", "sftp://u@h/x/",
                                              "ftp://h/"])),
               size=len(data), checksum=Checksum(method, sha(method, data)) if op is Op.WRITE else None,
               mtime=draw(st.none() | st.just(WHEN)))
    return n, data


@settings(max_examples=150, deadline=None)
@given(notices(), st.none() | points, st.booleans())
def test_every_message_dd_writes_is_valid_wnm_and_comes_back_the_same(case, geometry, inline):
    n, data = case
    message = formats.encode(n, "wis2", TOPIC, wis2_settings=wis2.Settings(geometry=geometry),
                             content=data if inline else None)
    assert len(message.body) <= wis2.MAX_MESSAGE
    written = valid_wnm(message.body)
    assert written["geometry"] == geometry
    assert (message.exchange, message.topic) == (EXCHANGE, ROUTING_KEY)
    back = formats.decode(message.body, exchange=message.exchange, topic=message.topic)
    assert (back.base_url.rstrip("/"), back.rel_path, back.size, back.checksum, back.pubtime, back.op) == (
        n.base_url.rstrip("/"), n.rel_path, n.size, n.checksum, n.pubtime, n.op)
    assert back.url == n.url
    if inline and n.op is Op.WRITE:
        content = written["properties"]["content"]
        value = content["value"].encode() if content["encoding"] == "utf-8" else base64.b64decode(content["value"])
        assert value == data
    # A shovel passes it on unchanged: same id, same pubtime text, same topic.
    again = formats.encode(back, "wis2")
    assert json.loads(again.body) == written
    assert (again.exchange, again.topic) == (message.exchange, message.topic)


times = st.datetimes(datetime.datetime(2000, 1, 1), datetime.datetime(2100, 1, 1)).map(
    lambda t: t.strftime("%Y-%m-%dT%H:%M:%S") + st_fraction(t) + "Z")


def st_fraction(moment):
    return f".{moment.microsecond:06d}{moment.microsecond % 1000:03d}" if moment.microsecond % 2 else ""


@st.composite
def foreign_messages(draw):
    """Valid WNM messages as others write them: time ranges, metadata, other links, updates."""
    method = draw(st.sampled_from(sorted(wis2.DIGESTS)))
    data_id = "/".join(draw(paths))
    safe = draw(st.sampled_from(["/", "", "/~:@"]))      # hrefs spelt otherwise than dd would
    href = draw(st.sampled_from(["https://node.example/", "ftp://node.example/x/"])) + "/".join(
        urllib.parse.quote(w, safe=safe) for w in draw(paths))
    properties = {"pubtime": draw(times), "data_id": data_id}
    if draw(st.integers(0, 4)):
        properties["integrity"] = {"method": method, "value": base64.b64encode(
            draw(st.binary(min_size=wis2.DIGESTS[method], max_size=wis2.DIGESTS[method]))).decode()}
    if draw(st.booleans()):
        properties.update(start_datetime=draw(times), end_datetime=draw(times))
    else:
        properties["datetime"] = draw(st.none() | times)
    for name, value in draw(st.dictionaries(st.sampled_from(["metadata_id", "producer", "wigos_station_identifier"]),
                                            st.text(max_size=20), max_size=2)).items():
        properties[name] = value
    if draw(st.booleans()):
        properties["cache"] = draw(st.booleans())
    main = {"href": href, "rel": draw(st.sampled_from(["canonical", "update"])), "type": "application/bufr",
            "length": draw(st.integers(0, 1 << 40))}
    links = [main] + draw(st.lists(st.fixed_dictionaries(
        {"href": st.just("https://node.example/oapi/items/1"), "rel": st.sampled_from(["item", "via"])}),
        max_size=2))
    return {"id": str(draw(st.uuids())), "conformsTo": [wis2.CONFORMANCE], "type": "Feature",
            "geometry": draw(st.none() | points), "properties": properties, "links": links}


@settings(max_examples=150, deadline=None)
@given(foreign_messages())
def test_a_shovel_sends_on_any_valid_message_exactly_as_it_came(message):
    valid_wnm(json.dumps(message))
    back = formats.decode(json.dumps(message).encode(), exchange=EXCHANGE, topic=ROUTING_KEY)
    again = formats.encode(back, "wis2")
    assert json.loads(again.body) == message
    assert (again.exchange, again.topic) == (EXCHANGE, ROUTING_KEY)


def test_pubtime_is_never_rewritten_by_a_relay_even_with_nanoseconds():
    body = json.loads(formats.encode(notice(), "wis2", TOPIC).body)
    body["properties"]["pubtime"] = "2026-12-03T08:01:16.123456789Z"
    back = formats.decode(json.dumps(body).encode())
    copy = dataclass_copy(back, base_url="https://cache.example/")
    relayed = json.loads(formats.encode(copy, "wis2", TOPIC).body)
    assert relayed["properties"]["pubtime"] == "2026-12-03T08:01:16.123456789Z"


def dataclass_copy(n, **changes):
    return dataclasses.replace(n, extra=dict(n.extra), **changes)


def test_pywis_pubsub_downloads_and_verifies_what_dd_announces(pump):
    (pump.src / "obs.bufr").write_bytes(b"BUFR" + bytes(range(256)) * 10)
    data = (pump.src / "obs.bufr").read_bytes()
    n = notice(base_url=pump.base_url, rel_path="obs.bufr", size=len(data),
               checksum=Checksum("sha512", sha("sha512", data)))
    message = valid_wnm(formats.encode(n, "wis2", TOPIC).body)
    assert verification.verify_data(message, verify_certs=False)
    message["properties"]["integrity"]["value"] = base64.b64encode(hashlib.sha512(b"other").digest()).decode()
    assert not verification.verify_data(message, verify_certs=False)


def test_a_global_cache_gets_a_cache_topic_and_says_so():
    cache = wis2.Settings(global_cache="de-dwd-gc")
    back = formats.decode(formats.encode(notice(), "wis2", TOPIC).body, exchange=EXCHANGE, topic=ROUTING_KEY)
    assert back.source == "ca-eccc-msc"
    message = formats.encode(back, "wis2", None, wis2_settings=cache)
    assert (message.exchange, message.topic) == ("cache", ROUTING_KEY)
    assert valid_wnm(message.body)["properties"]["global-cache"] == "de-dwd-gc"


def test_inline_content_stays_within_4096_bytes_and_the_message_within_8_kib():
    small, large = b"\xff" * 3000, b"\xff" * 3100            # base64: 4000 and 4136 bytes
    for data, inlined in ((small, True), (large, False)):
        n = notice(size=len(data), checksum=Checksum("sha256", sha("sha256", data)))
        message = valid_wnm(formats.encode(n, "wis2", TOPIC, content=data).body)
        assert ("content" in message["properties"]) is inlined
    # Inline content that would push the message past 8 KiB is left out, the link stays.
    crowded = notice(size=len(small), checksum=Checksum("sha256", sha("sha256", small)),
                     extra={"metadata_id": "x" * 4000})
    body = formats.encode(crowded, "wis2", TOPIC, content=small).body
    assert len(body) <= 8192 and "content" not in valid_wnm(body)["properties"]


# --- What breaks WNM, either way, is refused by name ---

@pytest.mark.parametrize("method", ["md5", "none", "xxh128", "name"])
def test_checksums_wis2_does_not_allow_are_refused_on_posting(method):
    with pytest.raises(NoticeError) as refused:
        formats.encode(notice(checksum=Checksum(method, "00" * 16)), "wis2", TOPIC)
    assert refused.value.rule == "wis2-integrity"
    assert "post_format wis2" in refused.value.fix


def test_a_rename_is_new_data_at_its_new_place_and_a_link_has_no_wis2_form():
    moved = formats.encode(notice(op=Op.RENAME, rename_from="synop/old.bufr"), "wis2", TOPIC)
    message = valid_wnm(moved.body)
    assert message["links"][0]["rel"] == "canonical" and message["properties"]["data_id"] == "synop/a b.bufr"
    with pytest.raises(NoticeError) as refused:
        formats.encode(notice(op=Op.LINK, link_target="x", size=None, checksum=None), "wis2", TOPIC)
    assert refused.value.rule == "wis2-op"


@pytest.mark.parametrize("topic, why", [
    ("origin/a/wis2/ca.eccc/data/core/weather", "has a dot"),
    ("origin/a/wis2/CA-ECCC/data/core/weather", "lowercase"),
    ("origin/a/wis2/ca-eccc-msc/data/core", "fewer than 7"),
    ("upstream/a/wis2/ca-eccc-msc/data/core/weather", "origin, cache"),
    ("origin/a/wis2/ca-eccc-msc/data/secret/weather", "core, recommended"),
    ("origin/a/wis2/ca-eccc-msc/data/core/astrology", "weather"),
    ("origin/a/wis2/ca-eccc-msc/data/core/weather/#", "level 8"),
])
def test_topics_outside_the_wis2_hierarchy_are_refused_on_posting(topic, why):
    with pytest.raises(NoticeError, match=why) as refused:
        formats.encode(notice(), "wis2", topic)
    assert refused.value.rule == "wis2-topic"


def test_a_wis2_poster_without_a_topic_is_told_which_to_set():
    with pytest.raises(NoticeError, match="post_topic_prefix") as refused:
        formats.encode(notice(), "wis2")
    assert refused.value.rule == "wis2-topic"


@pytest.mark.parametrize("prefix, why", [("origin/a/wis2/ca.eccc/data/core/weather", "has a dot"),
                                         (None, "needs post_topic")])
def test_a_bad_or_missing_post_topic_prefix_stops_the_poster_at_start_up(pump, prefix, why):
    (pump.src / "a.txt").write_text("a\n")
    topic = {"post_topic_prefix": prefix} if prefix else {}
    result = pump.post(pump.src, check=False, post_format="wis2", **topic)
    assert result.returncode != 0
    assert "post_topic" in result.stderr and why in result.stderr
    assert "Traceback" not in result.stderr and "announced" not in result.stderr


def good_message():
    return json.loads(formats.encode(notice(), "wis2", TOPIC).body)


def broken(change):
    message = good_message()
    change(message)
    return json.dumps(message).encode()


MALFORMED = {
    "no id": (lambda m: m.pop("id"), "wis2-id"),
    "id not a uuid": (lambda m: m.update(id="42"), "wis2-id"),
    "md5 integrity": (lambda m: m["properties"].update(integrity={"method": "md5", "value": "AAAA"}),
                      "wis2-integrity"),
    "short digest": (lambda m: m["properties"]["integrity"].update(value="AAAA"), "wis2-integrity"),
    "9 KiB": (lambda m: m["properties"].update(padding="x" * 9216), "wis2-size"),
    "two canonical links": (lambda m: m["links"].append(dict(m["links"][0])), "wis2-links"),
    "canonical and deletion": (lambda m: m["links"].append(dict(m["links"][0], rel="deletion")), "wis2-links"),
    "no main link": (lambda m: m["links"][0].update(rel="item"), "wis2-links"),
    "no length": (lambda m: m["links"][0].pop("length"), "wis2-links"),
    "file href": (lambda m: m["links"][0].update(href="file:///etc/passwd"), "wis2-href"),
    "gopher href": (lambda m: m["links"].append({"rel": "item", "href": "gopher://h/x"}), "wis2-href"),
    "no conformance": (lambda m: m.update(conformsTo=["http://example.org/"]), "wis2-conformance"),
    "not a feature": (lambda m: m.update(type="FeatureCollection"), "wis2-type"),
    "line geometry": (lambda m: m.update(geometry={"type": "LineString", "coordinates": [[0, 0], [1, 1]]}),
                      "wis2-geometry"),
    "no geometry": (lambda m: m.pop("geometry"), "wis2-geometry"),
    "local pubtime": (lambda m: m["properties"].update(pubtime="2026-12-03T09:01:16+01:00"), "wis2-time"),
    "no datetime": (lambda m: m["properties"].pop("datetime"), "wis2-time"),
    "datetime and range": (lambda m: m["properties"].update(start_datetime="2026-12-03T00:00:00Z",
                                                            end_datetime="2026-12-03T01:00:00Z"), "wis2-time"),
    "content over 4096": (lambda m: m["properties"].update(
        content={"encoding": "base64", "value": "A" * 4100, "size": 3075}), "wis2-content"),
    "empty data_id": (lambda m: m["properties"].update(data_id=""), "wis2-data-id"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_messages_each_get_a_named_refusal(case):
    change, rule = MALFORMED[case]
    body = broken(change)
    with pytest.raises(NoticeError) as refused:
        formats.decode(body)
    assert refused.value.rule == rule, refused.value
    assert "\n" not in str(refused.value)
    # The schema or pywis-pubsub's suite agrees wherever it checks the same thing.
    if case in ("no id", "9 KiB") or SCHEMA is None:
        return
    message = json.loads(body)
    schema_ok = SCHEMA.is_valid(message)
    suite = ets.WNMTestSuite(message)
    requirements(suite)
    assert not (schema_ok and not suite.errors) or case in (
        "id not a uuid", "short digest", "two canonical links", "canonical and deletion", "no length",
        "local pubtime", "content over 4096", "empty data_id", "md5 integrity")


@settings(max_examples=300, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=10), st.sampled_from(["id", "geometry", "properties", "links", "conformsTo", "type"]))
def test_any_value_in_any_top_level_field_is_decoded_or_refused_by_name(value, field):
    message = good_message()
    message[field] = value
    try:
        formats.decode(json.dumps(message).encode())
    except NoticeError as error:
        assert error.rule


def test_options_parse_geometry_as_a_point_or_geojson():
    geometry = options.BY_NAME["wis_geometry"].kind.parse
    assert geometry("6.15 46.22") == {"type": "Point", "coordinates": [6.15, 46.22]}
    assert geometry('{"type":"Polygon","coordinates":[[[0,0],[1,0],[1,1],[0,0]]]}')["type"] == "Polygon"
    with pytest.raises(ValueError, match="Point or a Polygon"):
        geometry('{"type":"LineString","coordinates":[[0,0],[1,1]]}')


# --- Duplicates ---

def test_duplicates_by_id_and_by_data_id_with_pubtime_a_newer_pubtime_is_an_update(tmp_path):
    store = nodupe.Store(tmp_path / "s.sqlite", ttl=300)
    first = formats.decode(formats.encode(notice(), "wis2", TOPIC).body)

    def claims(n):
        keys = nodupe.message_keys("/tree", n)
        return all(store.claim(k) for k in keys)
    assert claims(first)
    store.confirm(nodupe.message_keys("/tree", first))
    same_id_elsewhere = dataclass_copy(first, base_url="https://mirror.example/", rel_path="other/x.bufr")
    same_id_elsewhere.extra["data_id"] = "other/x.bufr"
    assert not claims(same_id_elsewhere)
    new_id_same_version = dataclass_copy(first)
    new_id_same_version.extra["id"] = str(uuid.uuid4())
    assert not claims(new_id_same_version)
    update = dataclass_copy(first, pubtime=WHEN + datetime.timedelta(seconds=1))
    update.extra["id"] = str(uuid.uuid4())
    assert claims(update)


# --- Over a real RabbitMQ ---

class Capture:
    """A queue of our own bound to an exchange, to read what dd publishes there."""

    def __init__(self, broker_url, binding, exchange):
        url = Url.parse(broker_url)
        self.connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                          password=url.password, virtual_host=url.path.lstrip("/"))
        self.connection.connect()
        self.channel = self.connection.channel()
        self.channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.queue, _, _ = self.channel.queue_declare("", exclusive=True)
        self.channel.queue_bind(self.queue, exchange, binding)

    def take(self, count, timeout=30):
        """Up to `count` messages, as many as arrive within `timeout` seconds."""
        messages = []
        wait_for(lambda: self._get(messages) >= count, timeout=timeout)
        return messages

    def _get(self, messages):
        message = self.channel.basic_get(self.queue, no_ack=True)
        if message is not None:
            messages.append(message)
        return len(messages)


@pytest.fixture
def capture(broker_url):
    """capture(binding, exchange): a Capture, closed after the test."""
    made = []

    def make(binding, exchange=EXCHANGE):
        made.append(Capture(broker_url, binding, exchange))
        return made[-1]
    yield make
    for one in made:
        one.connection.close()


@pytest.fixture
def pump(pump):
    """The pump, its notices on the exchange of WIS2 topics origin/..."""
    pump.exchange = EXCHANGE
    return pump


def wis2_subscriber(pump, extra=""):
    return pump.subscriber_config(extra=f"topic_prefix a.wis2\nsubtopic #\n{extra}")


def test_dd_post_in_wis2_is_mirrored_byte_identical_by_dd_subscribe(pump, capture):
    expected = make_tree(pump.src, count=60)
    wis2_subscriber(pump)
    origin = capture("a.wis2.#")
    posted = pump.post(pump.src, post_format="wis2", post_topic_prefix=TOPIC, wis_inline="on",
                       wis_geometry="6.15 46.22")
    assert posted.returncode == 0, posted.stderr
    subscriber = pump.foreground()
    arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=60)
    status, log = pump.stop(subscriber)
    assert arrived, (compare(expected, manifest(pump.dst)), log[-2000:])
    assert status == 0 and "Traceback" not in log
    messages = origin.take(60)
    assert {(m.delivery_info["exchange"], m.delivery_info["routing_key"]) for m in messages} == {
        (EXCHANGE, ROUTING_KEY)}
    inlined = 0
    for m in messages:
        written = valid_wnm(m.body)
        assert m.properties["content_type"] == "application/geo+json"
        assert written["geometry"] == {"type": "Point", "coordinates": [6.15, 46.22]}
        inlined += "content" in written["properties"]
    small = sum(1 for p in pump.src.rglob("*") if p.is_file() and p.stat().st_size <= 3000)
    assert inlined == small


def test_dd_mirrors_what_pywis_pubsub_makes(pump):
    data = b"BUFR" + bytes(range(200))
    (pump.src / "pywis.bufr").write_bytes(data)
    url_info = publish.get_url_info(pump.base_url + "pywis.bufr")
    message = publish.create_message(TOPIC, "application/bufr", url_info, str(uuid.uuid4()),
                                     datetime_="2026-12-03T08:00:00Z", geometry=[6.15, 46.22])
    valid_wnm(json.dumps(message))
    wis2_subscriber(pump)
    pump.publish_raw(json.dumps(message).encode(), topic=ROUTING_KEY)
    subscriber = pump.foreground()
    landed = pump.dst / urlpath(pump.base_url + "pywis.bufr")
    arrived = wait_for(landed.exists, timeout=30)
    status, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert landed.read_bytes() == data


def urlpath(url):
    return urllib.parse.unquote(urllib.parse.urlsplit(url).path).lstrip("/")


def test_a_subscriber_takes_one_message_id_once_whatever_route_it_names(pump):
    for name in ("first.txt", "mirror.txt"):
        (pump.src / name).write_bytes(b"same obs\n")
    first = notice(base_url=pump.base_url, rel_path="first.txt", size=9,
                   checksum=Checksum("sha512", sha("sha512", b"same obs\n")))
    body = json.loads(formats.encode(first, "wis2", TOPIC).body)
    wis2_subscriber(pump, "nodupe_ttl 5m")  # dd_subscribe's default is 0: no duplicate store
    pump.publish_raw(json.dumps(body).encode(), topic=ROUTING_KEY)
    body["links"][0]["href"] = pump.base_url + "mirror.txt"      # the same message, another copy
    body["properties"]["data_id"] = "mirror.txt"
    pump.publish_raw(json.dumps(body).encode(), topic=ROUTING_KEY)
    body["id"] = str(uuid.uuid4())                                  # a new message: taken
    body["links"][0]["href"] = pump.base_url + "later.txt"
    body["properties"].update(data_id="later.txt", pubtime="2026-12-03T08:02:00Z")
    (pump.src / "later.txt").write_bytes(b"same obs\n")
    pump.publish_raw(json.dumps(body).encode(), topic=ROUTING_KEY)
    subscriber = pump.foreground()
    arrived = wait_for(lambda: (pump.dst / "later.txt").exists(), timeout=30)
    status, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert (pump.dst / "first.txt").exists()
    assert not (pump.dst / "mirror.txt").exists()


@pytest.mark.parametrize("integrity", ["verified", "absent", "wrong"])
def test_a_global_cache_relay_republishes_with_a_new_id_its_own_href_and_the_same_pubtime(pump, capture, integrity):
    data = b"synop data\n"
    (pump.src / "synop.txt").write_bytes(data)
    pump.component = "sara"
    pump.subscriber_config(extra=f"topic_prefix a.wis2\nsubtopic #\npost_format wis2\n"
                                 f"wis_global_cache de-dwd-gc\npost_base_dir {pump.base / 'dst'}\n")
    cached = capture("a.wis2.#", exchange="cache")
    original = notice(base_url=pump.base_url, rel_path="synop.txt", size=len(data),
                      checksum=Checksum("sha256", sha("sha256", data)))
    sent = json.loads(formats.encode(original, "wis2", TOPIC).body)
    if integrity == "absent":
        del sent["properties"]["integrity"]
    elif integrity == "wrong":
        sent["properties"]["integrity"]["value"] = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    body = json.dumps(sent).encode()
    pump.publish_raw(body, topic=ROUTING_KEY)
    pump.publish_raw(body, topic=ROUTING_KEY)  # again: one copy, one message
    relay = pump.foreground()
    relayed = cached.take(1, timeout=10 if integrity == "wrong" else 30)
    extra = cached.take(1, timeout=3)
    status, log = pump.stop(relay)
    if integrity == "wrong":  # neither kept nor announced
        assert not relayed and not (pump.dst / "ca-eccc-msc" / "synop.txt").exists()
        return
    assert relayed, log[-2000:]
    assert not extra
    out = valid_wnm(relayed[0].body)
    assert (relayed[0].delivery_info["exchange"], relayed[0].delivery_info["routing_key"]) == (
        "cache", ROUTING_KEY)
    assert out["id"] != sent["id"]
    assert out["properties"]["pubtime"] == sent["properties"]["pubtime"]
    assert out["properties"]["global-cache"] == "de-dwd-gc"
    assert out["properties"]["data_id"] == sent["properties"]["data_id"]
    # What came verified is sent on; what came without integrity, summed on download.
    assert out["properties"]["integrity"] == (sent["properties"]["integrity"] if integrity == "verified" else {
        "method": "sha512", "value": base64.b64encode(hashlib.sha512(data).digest()).decode()})
    # Filed, and served, under the centre that published it.
    assert out["links"][0]["href"] == "http://127.0.0.1:9/ca-eccc-msc/synop.txt"
    assert (pump.dst / "ca-eccc-msc" / "synop.txt").read_bytes() == data


def test_dd_post_with_a_checksum_wis2_refuses_says_so_and_fails(pump):
    (pump.src / "a.txt").write_text("a\n")
    result = pump.post(pump.src / "a.txt", check=False, post_format="wis2", post_topic_prefix=TOPIC,
                       checksum="md5")
    assert result.returncode != 0
    assert "not allowed in WIS2" in result.stderr and "checksum sha512" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_node_a_global_cache_and_a_consumer_in_a_chain(pump):
    """dd_post (a WIS2 node) -> dd_sara (a global cache, serving its copies) -> dd_subscribe
    (a data consumer of the cache's messages): the consumer's copy is the node's file."""
    expected = make_tree(pump.src, count=20, seed=3)
    cache_dir = pump.src.parent / f"{pump.src.name}-cache"
    cache_url = pump.base_url.rstrip("/") + "-cache/"
    pump.component = "sara"
    pump.subscriber_config("cache", extra=f"topic_prefix a.wis2\nsubtopic #\npost_format wis2\n"
                                          f"wis_global_cache de-dwd-gc\npost_base_url {cache_url}\n",
                           directory=cache_dir)
    cache = pump.foreground("cache")
    pump.component = "subscribe"
    consumer_dir = pump.base / "consumer"
    pump.subscriber_config("consumer", extra="exchange cache\ntopic_prefix a.wis2\nsubtopic #\n",
                           directory=consumer_dir)
    consumer = pump.foreground("consumer")
    posted = pump.post(pump.src, post_format="wis2", post_topic_prefix=TOPIC)
    assert posted.returncode == 0, posted.stderr
    # The cache files everything under the centre id; the consumer lands it at its data_id.
    arrived = wait_for(lambda: compare(expected, manifest(consumer_dir)) == ([], [], []), timeout=60)
    _, consumer_log = pump.stop(consumer)
    _, cache_log = pump.stop(cache)
    assert arrived, (compare(expected, manifest(consumer_dir)), cache_log[-1500:], consumer_log[-1500:])
    assert compare(expected, manifest(cache_dir / "ca-eccc-msc")) == ([], [], [])


def test_a_data_id_climbing_out_of_the_tree_is_refused(pump):
    (pump.base / "outside.txt").write_text("mine\n")
    body = good_message()
    body["properties"]["data_id"] = "../outside.txt"
    body["links"][0]["href"] = pump.base_url + "x/../outside.txt"
    wis2_subscriber(pump)
    pump.publish_raw(json.dumps(body).encode(), topic=ROUTING_KEY)
    subscriber = pump.foreground()
    drained = wait_for(lambda: pump.queue_depth() == 0, timeout=30)
    status, log = pump.stop(subscriber)
    assert drained and "Traceback" not in log
    assert (pump.base / "outside.txt").read_text() == "mine\n"
    assert "path climbs out of its directory" in log and "[dot-dot]" in log, log[-1500:]


def test_a_wis2_node_on_dd_watch_announces_writes_renames_and_deletions_but_not_links(pump, capture):
    origin = capture("a.wis2.#")
    watcher = Watcher(pump, f"post_format wis2\npost_topic_prefix {TOPIC}\nwis_inline on\n").start()
    (pump.src / "obs.txt").write_bytes(b"12345 obs\n")
    written = origin.take(1)
    (pump.src / "obs.txt").rename(pump.src / "moved.txt")
    later = origin.take(1)
    (pump.src / "link.txt").symlink_to("moved.txt")
    assert wait_for(lambda: "symbolic link" in watcher.text(), timeout=20)
    (pump.src / "moved.txt").unlink()
    later += origin.take(1)
    watcher.stop()
    log = watcher.text()
    messages = [valid_wnm(m.body) for m in written + later]
    assert [(m["links"][0]["rel"], m["properties"]["data_id"]) for m in messages] == [
        ("canonical", "obs.txt"), ("canonical", "moved.txt"), ("deletion", "moved.txt")]
    assert messages[0]["properties"]["content"] == {"encoding": "utf-8", "value": "12345 obs\n", "size": 10}
    assert messages[1]["properties"]["integrity"] == messages[0]["properties"]["integrity"]
    assert "not announced" in log and "symbolic link has no WIS2 form" in log
    assert not origin.take(1, timeout=2)


def test_dd_mirrors_what_pywis_pubsub_publishes_over_mqtt(pump, mosquitto):
    """pywis-pubsub's own MQTT client publishes its own message on the dataset's topic;
    dd_subscribe, on exchange origin over MQTT (the topic origin/a/wis2/#), mirrors it."""
    data = b"BUFR" + bytes(range(100))
    (pump.src / "mqtt.bufr").write_bytes(data)
    message = publish.create_message(TOPIC, "application/bufr", publish.get_url_info(pump.base_url + "mqtt.bufr"),
                                     str(uuid.uuid4()), datetime_="2026-12-03T08:00:00Z")
    pump.broker_url = mosquitto.url("dd")
    wis2_subscriber(pump)                       # its persistent session holds what comes before it starts
    client = importlib.import_module("pywis_pubsub.mqtt").MQTTPubSubClient(mosquitto.url("dd"))
    sent = client.conn.publish(TOPIC, json.dumps(message), qos=1)
    sent.wait_for_publish(10)
    client.close()
    subscriber = pump.foreground()
    landed = pump.dst / urlpath(pump.base_url + "mqtt.bufr")
    arrived = wait_for(landed.exists, timeout=30)
    status, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert landed.read_bytes() == data
