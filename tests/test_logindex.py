"""The log index: who may report on what a pump relayed, for how long, in how much room,
shared by the processes of one account."""
import sqlite3
import subprocess
import sys

import pytest

from dd.pump import indexing
from dd.store import logindex
from dd.core.errors import ConfigError
from dd.core.notice import Checksum, Notice, now

SUM = Checksum("sha512", "ab" * 64)


def notice(rel_path="obs/a.txt", source="ann", checksum=SUM, readers=()):
    return Notice(pubtime=now(), base_url="http://pump/", rel_path=rel_path, source=source,
                  checksum=checksum, readers=list(readers))


@pytest.fixture
def index(tmp_path):
    the_index = logindex.Index(tmp_path / "index.sqlite", window=3600, limit=1000)
    yield the_index
    the_index.close()


def test_a_public_announcement_may_be_reported_by_anyone_but_only_as_announced(index):
    index.record([logindex.announced(notice())], now=1000.0)
    assert index.allows("obs/a.txt", "ann", SUM, "bob", now=1001.0)
    assert index.allows("obs/a.txt", "ann", SUM, "eve", now=1001.0)
    assert not index.allows("obs/b.txt", "ann", SUM, "bob", now=1001.0)        # another file
    assert not index.allows("obs/a.txt", "anne", SUM, "bob", now=1001.0)       # another source
    assert not index.allows("obs/a.txt", "ann", Checksum("sha512", "cd" * 64), "bob", now=1001.0)
    assert not index.allows("obs/a.txt", "ann", None, "bob", now=1001.0)


def test_a_delete_has_no_checksum_and_matches_only_without_one(index):
    index.record([logindex.announced(notice(checksum=None))], now=1000.0)
    assert index.allows("obs/a.txt", "ann", None, "bob", now=1001.0)
    assert not index.allows("obs/a.txt", "ann", SUM, "bob", now=1001.0)


def test_only_readers_and_relays_may_report_on_private_data(index):
    index.record([logindex.announced(notice(readers=["bob"]), relay_readers=["feederb"])], now=1000.0)
    for reader in ("bob", "feederb"):
        assert index.allows("obs/a.txt", "ann", SUM, reader, now=1001.0)
    # Its notice went to the readers' own exchanges: nobody else can have received it.
    assert not index.allows("obs/a.txt", "ann", SUM, "eve", now=1001.0)


def test_what_a_relay_ingested_only_the_relay_may_report_on(index):
    index.record([logindex.ingested(notice(), "feeder")], now=1000.0)
    assert index.allows("obs/a.txt", "ann", SUM, "feeder", now=1001.0)
    # Nobody else saw it: it was on the source's own exchange only.
    assert not index.allows("obs/a.txt", "ann", SUM, "eve", now=1001.0)


def test_an_entry_past_the_window_no_longer_matches_until_recorded_again(index):
    index.record([logindex.announced(notice())], now=1000.0)
    assert index.allows("obs/a.txt", "ann", SUM, "bob", now=4599.0)
    assert not index.allows("obs/a.txt", "ann", SUM, "bob", now=4601.0)
    index.record([logindex.announced(notice())], now=4000.0)
    assert index.allows("obs/a.txt", "ann", SUM, "bob", now=4601.0)
    index.purge(now=8000.0)
    assert len(index) == 0


def test_the_index_holds_at_most_its_limit_and_the_oldest_go_first(tmp_path):
    index = logindex.Index(tmp_path / "index.sqlite", window=3600, limit=100)
    index.record([logindex.announced(notice(f"f{i}")) for i in range(250)], now=1000.0)
    index.purge(now=1000.0)
    assert len(index) == 100
    assert not index.allows("f149", "ann", SUM, "bob", now=1000.0)
    assert index.allows("f150", "ann", SUM, "bob", now=1000.0)
    # Recorded again, an old entry is among the newest and stays.
    index.record([logindex.announced(notice("f150"))], now=1000.0)
    index.record([logindex.announced(notice(f"g{i}")) for i in range(99)], now=1000.0)
    index.purge(now=1000.0)
    assert index.allows("f150", "ann", SUM, "bob", now=1000.0)
    assert not index.allows("f151", "ann", SUM, "bob", now=1000.0)


def test_recording_purges_as_it_goes(tmp_path):
    index = logindex.Index(tmp_path / "index.sqlite", window=3600, limit=10)
    for i in range(logindex.PURGE_EVERY):
        index.record([logindex.announced(notice(f"f{i}"))])
    assert len(index) <= 10


def test_what_one_process_records_another_finds_and_it_survives_restarts(tmp_path):
    path = tmp_path / "state" / "log_index.sqlite"
    script = ("from dd.store import logindex; from dd.core.notice import Checksum; "
              f"i = logindex.Index({str(path)!r}, window=3600, limit=1000); "
              "i.record([logindex.Entry('obs/a.txt', 'ann', Checksum('md5', '00'), frozenset({'bob'}))])")
    subprocess.run([sys.executable, "-c", script], check=True)
    reader = logindex.Index(path, window=3600, limit=1000)
    assert reader.allows("obs/a.txt", "ann", Checksum("md5", "00"), "bob")
    assert not reader.allows("obs/a.txt", "ann", Checksum("md5", "00"), "eve")


def test_an_index_that_cannot_be_opened_is_one_line_naming_the_file_and_the_fix(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as raised:
        logindex.Index(blocker / "index.sqlite", window=3600, limit=10)
    message = str(raised.value)
    assert str(blocker / "index.sqlite") in message and "log_index" in message and "\n" not in message


class Publisher:
    """A post step that keeps what it is asked to publish."""

    def __init__(self):
        self.published = []

    def post(self, items):
        self.published.extend(items)
        return []


def test_a_relay_that_cannot_record_still_publishes_and_names_the_index(tmp_path, caplog):
    path = tmp_path / "index.sqlite"
    index = logindex.Index(path, window=3600, limit=10)
    with sqlite3.connect(path) as damage:
        damage.execute("DROP TABLE entries")
    step = Publisher()
    recording = indexing.Recording(step, index, lambda item: [logindex.announced(item)])
    assert recording.post([notice()]) == []
    assert [n.rel_path for n in step.published] == ["obs/a.txt"]
    assert f"log index {path}: cannot record 1 notice(s)" in caplog.text


UP_A = logindex.Upstream("amqp://feederc@pump-a/", "xs_feederc")
UP_B = logindex.Upstream("amqp://feederc@pump-b/", "xs_feederc")


def test_an_entry_names_the_pump_its_notice_came_from_and_the_newest_one_counts(index):
    index.record([logindex.announced(notice(), upstream=UP_A), logindex.announced(notice("obs/local.txt"))],
                 now=1000.0)
    assert index.match("obs/a.txt", "ann", SUM, "bob", now=1001.0) == logindex.Match(UP_A)
    assert index.match("obs/local.txt", "ann", SUM, "bob", now=1001.0) == logindex.Match(None)
    assert index.match("obs/never.txt", "ann", SUM, "bob", now=1001.0) is None
    # The same notice announced again from another pump's feed: its log messages go there.
    index.record([logindex.announced(notice(), upstream=UP_B)], now=1002.0)
    assert index.match("obs/a.txt", "ann", SUM, "bob", now=1003.0) == logindex.Match(UP_B)
    # An upstream is one row, whatever the number of entries naming it.
    index.record([logindex.announced(notice(f"f{i}"), upstream=UP_A) for i in range(50)], now=1004.0)
    with sqlite3.connect(index.path) as db:
        assert db.execute("SELECT count(*) FROM upstreams").fetchone()[0] == 2


def test_an_index_made_before_entries_named_upstreams_is_migrated_and_keeps_its_entries(tmp_path):
    path = tmp_path / "index.sqlite"
    with sqlite3.connect(path) as old:
        old.executescript("CREATE TABLE entries (id INTEGER PRIMARY KEY, key BLOB NOT NULL, readers TEXT NOT NULL, "
                          "at REAL NOT NULL, UNIQUE (key, readers));")
        old.execute("INSERT INTO entries (key, readers, at) VALUES (?, '*', 1000.0)",
                    (logindex._key("obs/a.txt", "ann", SUM),))
    old.close()
    index = logindex.Index(path, window=3600, limit=1000)
    assert index.match("obs/a.txt", "ann", SUM, "bob", now=1001.0) == logindex.Match(None)
    index.record([logindex.announced(notice("obs/b.txt"), upstream=UP_A)], now=1001.0)
    assert index.match("obs/b.txt", "ann", SUM, "bob", now=1002.0) == logindex.Match(UP_A)
    index.close()
    logindex.Index(path, window=3600, limit=1000).close()      # opened again: nothing to migrate


def test_a_relay_names_an_upstream_only_when_it_reads_another_pump():
    from dd.core.credentials import Url
    feeder_a, here = Url.parse("amqp://feederc@pump-a/va"), Url.parse("amqp://feederc@pump-c/vc")
    assert indexing.upstream_of("xpublic", feeder_a, here, "xs_feederc") == \
        logindex.Upstream("amqp://feederc@pump-a/va", "xs_feederc")
    # A source's own exchange, or the pump's own broker, whoever logs in: this very pump.
    assert indexing.upstream_of("xs_ann", feeder_a, here, "xs_feederc") is None
    assert indexing.upstream_of("xpublic", Url.parse("amqp://other@PUMP-C/vc/"), here, "xs_other") is None
    # Another virtual host on the same broker is another pump.
    assert indexing.upstream_of("xpublic", Url.parse("amqp://feederc@pump-c/va"), here, "x") is not None
    # Pushed here by pump A's sender (report_upstream): A, whatever exchange the relay reads.
    pushed_from = Url.parse("amqp://feederc@pump-a/va")
    assert indexing.upstream_of("xs_feederc", here, here, "xs_feederc", pushed_from) == \
        logindex.Upstream("amqp://feederc@pump-a/va", "xs_feederc")
    assert indexing.upstream_of("xs_feederc", here, here, "xs_feederc", pushed_from, "xa") == \
        logindex.Upstream("amqp://feederc@pump-a/va", "xa")
