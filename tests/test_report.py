"""Log messages: the format (dd_log(7)), and a subscriber publishing one per notice it acts on."""
import dataclasses
import datetime
import json

import amqp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dd.core import report
from dd.core.credentials import Url
from dd.core.errors import NoticeError
from dd.core.notice import Checksum, Notice, Part
from tests.support.pump import wait_for

WHEN = datetime.datetime(2026, 11, 29, 6, 30, 1, 123456, tzinfo=datetime.timezone.utc)
POSTED = WHEN - datetime.timedelta(seconds=2)      # when ann posted the file
names = st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=40)


def sample(**changes):
    notice = Notice(pubtime=POSTED, base_url="https://pump.example.com/", rel_path="obs/today/a b.txt",
                    source="ann", from_cluster="pumpA", checksum=Checksum("sha512", "ab" * 64))
    fields = dict(code=201, message="delivered", rule="", host="h1", user="bob", component="subscribe",
                  duration=0.25, nbytes=1024, pubtime=WHEN)
    fields.update(changes)
    return report.of(notice, **fields)


def test_a_log_message_names_the_notice_the_outcome_and_the_consumer():
    body, headers = report.encode(sample())
    fields = json.loads(body)
    assert headers == {}
    assert fields == {"pubtime": "2026-11-29T06:30:01.123456Z", "rel_path": "obs/today/a b.txt",
                      "base_url": "https://pump.example.com/", "source": "ann", "from_cluster": "pumpA",
                      "checksum": {"method": "sha512", "value": "ab" * 64}, "code": 201,
                      "message": "delivered", "rule": "", "host": "h1", "user": "bob",
                      "component": "subscribe", "duration": 0.25, "bytes": 1024,
                      "posted": "2026-11-29T06:29:59.123456Z"}
    assert sample().topic == "v02.log.obs.today"


def test_a_log_message_without_the_posting_time_is_read_without_it():
    """As consumers that predate the field send it: the route then starts at the pick-up."""
    fields = json.loads(report.encode(sample())[0])
    del fields["posted"]
    made = report.decode(json.dumps(fields).encode())
    assert made.posted is None and made.pubtime == WHEN


def test_a_part_is_named_by_its_block_number():
    notice = Notice(pubtime=WHEN, base_url="http://x/", rel_path="big", size=10,
                    checksum=Checksum("md5", "0" * 32),
                    part=Part(4, 3, 2, 1, Checksum("md5", "1" * 32)))
    made = report.of(notice, code=202, message="part stored", rule="", host="h", user="u",
                     component="sara", duration=0.0, nbytes=4, pubtime=WHEN)
    assert report.decode(report.encode(made)[0]).block_number == 1


@given(rel_path=names, message=st.text(max_size=80).filter(lambda t: t.isprintable()),
       code=st.integers(100, 599), nbytes=st.integers(0, 1 << 60),
       duration=st.floats(0, 1e6, allow_nan=False), user=names)
def test_round_trip(rel_path, message, code, nbytes, duration, user):
    made = sample(message=message, code=code, nbytes=nbytes, duration=duration, user=user)
    made = report.Report(**{**made.__dict__, "rel_path": rel_path})
    assert report.decode(report.encode(made)[0]) == made


@pytest.mark.parametrize("change, rule", [
    ({"code": 99}, "code"),
    ({"code": "201"}, "type"),
    ({"bytes": -1}, "size"),
    ({"duration": "fast"}, "type"),
    ({"duration": -1}, "type"),
    ({"user": "bo\nb"}, "control-character"),
    ({"pubtime": "yesterday"}, "time"),
    ({"posted": "yesterday"}, "time"),
    ({"posted": 12}, "type"),
    ({"rel_path": None}, "missing-field"),
])
def test_malformed_log_messages_are_refused_naming_the_rule(change, rule):
    fields = json.loads(report.encode(sample())[0])
    for name, value in change.items():
        if value is None:
            del fields[name]
        else:
            fields[name] = value
    with pytest.raises(NoticeError) as refused:
        report.decode(json.dumps(fields).encode())
    assert refused.value.rule == rule


def log_queue(pump):
    """A queue on the subscriber's report exchange (xs_guest: its broker user is guest)."""
    url = Url.parse(pump.broker_url)
    connection = amqp.Connection(f"{url.host}:{url.port}", userid=url.user, password=url.password,
                                 virtual_host=url.path.lstrip("/"))
    connection.connect()
    channel = connection.channel()
    channel.exchange_declare("xs_guest", "topic", durable=True, auto_delete=False)
    queue, _, _ = channel.queue_declare("", exclusive=True)
    channel.queue_bind(queue, "xs_guest", "v02.log.#")
    return connection, channel, queue


def drain(channel, queue):
    messages = []
    while (message := channel.basic_get(queue, no_ack=True)) is not None:
        messages.append(message)
    return messages


def test_a_subscriber_reports_each_delivery_and_refusal_to_its_own_exchange(pump):
    connection, channel, queue = log_queue(pump)
    try:
        (pump.src / "obs").mkdir()
        (pump.src / "obs" / "one.txt").write_bytes(b"one")
        pump.subscriber_config()
        pump.post(pump.src / "obs" / "one.txt")
        pump.post(pump.src / "obs" / "one.txt")
        pump.publish_raw(json.dumps({
            "pubtime": "2026-01-01T00:00:00.000000Z", "base_url": pump.base_url,
            "rel_path": "../escape.txt", "source": "mallory", "from_cluster": "", "to_clusters": [],
            "op": "write", "size": 1, "checksum": {"method": "md5", "value": "0" * 32}}).encode())
        subscriber = pump.foreground()
        messages = []
        assert wait_for(lambda: len(messages.__iadd__(drain(channel, queue))) >= 3, timeout=30)
        pump.stop(subscriber)
    finally:
        connection.close()
    reports = sorted((report.decode(m.body) for m in messages), key=lambda r: r.code)
    assert [(r.rel_path, r.code) for r in reports] == [
        ("obs/one.txt", 201), ("obs/one.txt", 304), ("../escape.txt", 403)]
    delivered, _, refused = reports
    assert (delivered.user, delivered.component, delivered.bytes, delivered.source) == (
        "guest", "subscribe", 3, "guest")
    assert delivered.checksum.method == "sha512"
    assert refused.rule == "dot-dot" and refused.source == "mallory"
    assert {m.properties["user_id"] for m in messages} == {"guest"}
    assert messages[0].delivery_info["routing_key"] in ("v02.log.obs", "v02.log")


def test_log_reports_off_publishes_none(pump):
    connection, channel, queue = log_queue(pump)
    try:
        (pump.src / "quiet.txt").write_bytes(b"shh")
        pump.subscriber_config(extra="log_reports off")
        pump.post(pump.src / "quiet.txt")
        subscriber = pump.foreground()
        assert wait_for(lambda: (pump.dst / "quiet.txt").exists())
        assert wait_for(lambda: pump.queue_depth() == 0)
        pump.stop(subscriber)
        assert drain(channel, queue) == []
    finally:
        connection.close()


def test_dd_log_shows_what_arrived_since_its_last_run_as_a_table_or_json(pump):
    # Log routing to xr_<source> is the pump's; here dd_log reads the subscriber's own xs_guest.
    read = ("log", f"--broker={pump.broker_url}", "--exchange=xs_guest", "--subtopic=logged/#")
    first = pump.command(*read, check=True)
    assert first.stdout.splitlines() == [first.stdout.splitlines()[0]]  # the header: its queue is made
    (pump.src / "logged").mkdir()
    for name in ("a.txt", "b.txt"):
        (pump.src / "logged" / name).write_bytes(name.encode() * 100)
    pump.subscriber_config()
    pump.post(pump.src / "logged")
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "logged" / "b.txt").exists() and pump.queue_depth() == 0)
    pump.stop(subscriber)
    table = pump.command(*read, check=True).stdout.splitlines()
    assert table[0].split() == ["WHEN", "(UTC)", "OUTCOME", "BYTES", "SECONDS", "WHO", "FILE"]
    rows = sorted(table[1:], key=lambda row: row.split()[-1])
    assert len(rows) == 2
    assert rows[0].endswith("logged/a.txt") and "201 delivered" in rows[0] and "500 Bytes" in rows[0]
    assert "guest@" in rows[1] and "/subscribe " in rows[1]
    assert pump.command(*read, check=True).stdout.count("\n") == 1   # read once, gone

    pump.post(pump.src / "logged" / "a.txt")
    subscriber = pump.foreground()
    assert wait_for(lambda: pump.queue_depth() == 0)
    pump.stop(subscriber)
    lines = pump.command(*read, "--json", check=True).stdout.splitlines()
    assert [(r.rel_path, r.code) for r in map(report.decode, map(str.encode, lines))] == [("logged/a.txt", 304)]


def test_dd_log_shows_names_whole_and_escapes_what_could_pass_for_another(pump):
    read = ("log", f"--broker={pump.broker_url}", "--exchange=xs_guest", "--subtopic=names/#")
    long_host = "a-consumer-host-far-longer-than-its-column.example.com"
    sent = [sample(host=long_host, message="refused: " + "far too long a reason " * 3, code=403),
            sample(host="pum\u0440\u200b"),                      # Cyrillic er, zero-width space
            sample(host="pump/sara", component="x"),              # would read guest@pump/sara/x
            sample(host="h1")]
    sent[1] = dataclasses.replace(sent[1], rel_path="names/report\u202etxt.exe")  # shows as ...exe.txt
    connection, channel, _ = log_queue(pump)
    try:
        pump.command(*read, check=True)    # its queue is made
        for made in sent:
            made = dataclasses.replace(made, rel_path=made.rel_path.replace("obs/today", "names"))
            channel.basic_publish_confirm(amqp.Message(report.encode(made)[0]), exchange="xs_guest",
                                          routing_key=made.topic)
    finally:
        connection.close()
    rows = pump.command(*read, check=True).stdout.splitlines()[1:]
    assert len(rows) == 4
    assert f"bob@{long_host}/subscribe " in rows[0]
    assert "403 refused: " + "far too long a reason " * 2 + "far too long a reason" in rows[0]
    assert "bob@pum\\u0440\\u200b/subscribe " in rows[1] and rows[1].endswith("names/report\\u202etxt.exe")
    assert "bob@pump\\x2fsara/x " in rows[2]
    assert "bob@h1/subscribe " in rows[3] and rows[3].endswith("names/a b.txt")
    assert all(row.isprintable() for row in rows)


def test_dd_log_without_a_broker_says_what_to_set(pump):
    result = pump.command("log")
    assert result.returncode == 2
    assert "dd_log needs broker" in result.stderr and "Traceback" not in result.stderr
