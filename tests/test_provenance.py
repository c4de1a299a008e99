"""The provenance store the log router fills (dd.pump.provenance) and the console's history
(dd.store.history): what a search finds, whom it shows, and that both stay bounded."""
import datetime
import sqlite3

from dd.core import report
from dd.core.notice import Checksum, Notice
from dd.pump import provenance
from dd.store import history

T0 = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.timezone.utc)


def made(rel_path, source, user, component="subscribe", code=201, at=0.0, checksum="ab", rule="", posted=-1.0):
    """The log message of `user` about a file posted at T0 + `posted`, finished at T0 + `at`."""
    notice = Notice(pubtime=T0 + datetime.timedelta(seconds=posted), base_url="file:///t/", rel_path=rel_path,
                    source=source,
                    checksum=Checksum("sha512", checksum) if checksum else None)
    return report.of(notice, code=code, message="delivered" if code == 201 else "refused", rule=rule, host="h",
                     user=user, component=component, duration=0.25, nbytes=3,
                     pubtime=T0 + datetime.timedelta(seconds=at))


def test_a_search_finds_by_substring_or_glob_source_consumer_outcome_and_time(tmp_path):
    store = provenance.Store(tmp_path / "p.sqlite")
    store.keep([made("obs/a.txt", "ann", "pump", "sara", at=0), made("ann/obs/a.txt", "ann", "bob", at=1),
                made("ann/obs/a.txt", "ann", "eve", code=403, at=2, rule="reject"),
                made("obs/b_1.txt", "carl", "bob", at=3, checksum="cd"), made("obs/bx1.txt", "carl", "bob", at=4)])

    def found(**query):
        return [(e.rel_path, e.consumer) for e in store.search(provenance.Query(**query))]
    assert found(name="a.txt") == [("ann/obs/a.txt", "eve"), ("ann/obs/a.txt", "bob"), ("obs/a.txt", "pump")]
    assert found(name="b_1") == [("obs/b_1.txt", "bob")]            # _ is a character, not a wildcard
    assert found(name="obs/b?1.txt") == [("obs/bx1.txt", "bob"), ("obs/b_1.txt", "bob")]
    assert found(name="obs/*") == found(name="obs/") and len(found(name="obs/*")) == 5
    assert found(source="carl", consumer="bob") == [("obs/bx1.txt", "bob"), ("obs/b_1.txt", "bob")]
    assert found(outcome="refused") == [("ann/obs/a.txt", "eve")]
    assert found(since=T0.timestamp() + 2.5) == [("obs/bx1.txt", "bob"), ("obs/b_1.txt", "bob")]
    # A source's view: its own files only, whatever it asks.
    assert {e.source for e in store.search(provenance.Query(name="obs"), sources=frozenset({"ann"}))} == {"ann"}
    assert store.search(provenance.Query(source="carl"), sources=frozenset({"ann"})) == []
    assert store.search(provenance.Query(), sources=frozenset()) == []


def test_a_route_is_one_sources_file_by_checksum_whatever_its_paths(tmp_path):
    store = provenance.Store(tmp_path / "p.sqlite")
    store.keep([made("obs/a.txt", "ann", "pump", "sara", at=0), made("ann/obs/a.txt", "ann", "bob", at=1),
                made("ann/obs/a.txt", "ann", "eve", code=403, at=2, rule="reject"),
                made("obs/a.txt", "carl", "bob", at=3),                 # carl's file of the same content
                made("obs/n.txt", "ann", "bob", at=4, checksum=None), made("obs/m.txt", "ann", "bob", checksum=None)])
    bob = store.search(provenance.Query(name="a.txt", consumer="bob", source="ann"))[0]
    route = store.route(bob)
    assert [(e.consumer, e.outcome) for e in route.events] == [("pump", "delivered"), ("bob", "delivered"),
                                                              ("eve", "refused")]
    assert [e.consumer for e in route.hops] == ["pump"] and [e.consumer for e in route.deliveries] == ["bob", "eve"]
    assert route.names == ["obs/a.txt", "ann/obs/a.txt"]
    assert route.picked_up == T0.timestamp() - 0.25
    # The route starts when ann posted the file: each step's latency counts from there.
    assert route.posted == route.start == T0.timestamp() - 1.0
    files = provenance.files(store.search(provenance.Query(name="a.txt")))
    assert [(f.name, f.source, len(f.events)) for f in files] == [("obs/a.txt", "carl", 1), ("obs/a.txt", "ann", 3)]
    # Without a checksum, a file is its path.
    unsummed = store.search(provenance.Query(name="n.txt"))[0]
    assert [e.rel_path for e in store.route(unsummed).events] == ["obs/n.txt"]


def test_a_store_made_before_posting_times_were_kept_gains_their_column(tmp_path):
    path = tmp_path / "p.sqlite"
    old = sqlite3.connect(path)
    old.executescript("""CREATE TABLE events (id INTEGER PRIMARY KEY, at REAL NOT NULL, rel_path TEXT NOT NULL,
        source TEXT NOT NULL, checksum TEXT NOT NULL, consumer TEXT NOT NULL, host TEXT NOT NULL,
        component TEXT NOT NULL, code INTEGER NOT NULL, message TEXT NOT NULL, rule TEXT NOT NULL,
        bytes INTEGER NOT NULL, duration REAL NOT NULL);
        INSERT INTO events VALUES (1, 100.0, 'obs/a.txt', 'ann', 'sha512:ab', 'pump', 'h', 'sara', 201,
                                   'delivered', '', 3, 0.5);""")
    old.commit()
    old.close()
    store = provenance.Store(path)
    kept = store.event(1)
    assert kept is not None and kept.rel_path == "obs/a.txt" and kept.posted is None
    # Without a posting time, the route starts when the first pump took the file up.
    assert store.route(kept).posted is None and store.route(kept).start == 99.5
    store.keep([made("ann/obs/a.txt", "ann", "bob", at=1)])
    assert store.search(provenance.Query(consumer="bob"))[0].posted == T0.timestamp() - 1.0
    store.close()
    assert provenance.Store(path).search(provenance.Query(consumer="bob"))[0].posted == T0.timestamp() - 1.0


def test_the_store_forgets_what_is_older_than_its_retention_and_beyond_its_limit(tmp_path):
    store = provenance.Store(tmp_path / "p.sqlite", retention=60, limit=3)
    store.keep([made(f"obs/{i}.txt", "ann", "bob", at=i * 10) for i in range(8)])
    store.purge(now=T0.timestamp() + 100)
    # Older than a minute at +100 s: 0..30 s; of the rest (40..70 s), the three newest stay.
    assert sorted(e.rel_path for e in store.search(provenance.Query())) == ["obs/5.txt", "obs/6.txt", "obs/7.txt"]


def test_history_rates_come_from_consecutive_samples_and_a_day_is_kept(tmp_path):
    kept = history.History(tmp_path / "h.sqlite")
    kept.record([history.Sample(100.0, "subscribe/bob", 10, 1000, 5)])
    kept.record([history.Sample(110.0, "subscribe/bob", 30, 3000, 2)])
    kept.record([history.Sample(120.0, "subscribe/bob", 4, 400, None)])   # restarted: counts start again
    assert [(p.at, p.files_per_second, p.bytes_per_second, p.backlog) for p in kept.points("subscribe/bob", 0)] == \
        [(110.0, 2.0, 200.0, 2), (120.0, 0.0, 0.0, None)]
    kept.record([history.Sample(120.0 + history.KEEP + 1, "subscribe/bob", 5, 500, 0)])
    assert [s.at for s in kept.samples("subscribe/bob", 0)] == [120.0 + history.KEEP + 1]
