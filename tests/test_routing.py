"""Routing between pumps: a relay takes only what is for its way (to_clusters, its
cluster, gateway_for), and at ingest the source is the owner of the exchange the notice
came from, whatever the notice says (unless another pump's sender pushed it there)."""
import types

from dd.core import route
from dd.core.notice import Notice, now
from dd.flow import Item
from dd.pump import relay as relaying
from tests.support.pump import wait_for
from tests.test_sara import relay  # noqa: F401 - the fixture


def notice_for(*clusters):
    return Notice(pubtime=now(), base_url="http://x/", rel_path="f", to_clusters=list(clusters))


def test_a_relay_takes_what_is_for_its_cluster_or_a_cluster_it_is_a_gateway_for():
    assert route.reachable(notice_for("B"), "B")
    assert route.reachable(notice_for("C", "Z"), "B", ("C",))
    assert not route.reachable(notice_for("D"), "B", ("C",))
    assert route.reachable(notice_for(), "B")          # no destination named: everywhere
    assert route.reachable(notice_for("D"), None)      # a relay without a cluster does not route
    assert route.owner_of("xs_ann") == "ann" and route.owner_of("xpublic") is None
    assert route.owner_of("xs_") is None


def test_a_relay_forwards_only_notices_whose_destinations_are_reachable_through_it(pump, relay):
    for name in ("to_b", "to_c", "to_d", "anywhere"):
        (pump.src / name).write_text(name)
    relay.config("link", pump.exchange, extra="cluster B\ngateway_for C")
    for name, clusters in (("to_b", "B"), ("to_c", "C"), ("to_d", "D"), ("anywhere", None)):
        options = {"to_clusters": clusters, "cluster": "A"} if clusters else {"cluster": "A"}
        pump.post(pump.src / name, **options)
    process = relay.foreground("link")
    assert wait_for(lambda: relay.queue_depth("link") == 0 and relay.downstream.count() >= 3, timeout=60)
    log = relay.stop(process)
    forwarded = {n.rel_path: n for n in relay.downstream.notices()}
    assert sorted(forwarded) == ["guest/anywhere", "guest/to_b", "guest/to_c"], log[-2000:]
    assert not (relay.own / "to_d").exists()
    assert forwarded["guest/to_c"].to_clusters == ["C"] and forwarded["guest/to_c"].from_cluster == "A"


def test_at_ingest_the_source_is_the_owner_of_the_exchange_not_what_the_notice_says(pump, relay):
    (pump.src / "claimed.txt").write_text("whose?")
    relay.config("ingest", "xs_eve", extra="cluster B")
    posted = pump.post(pump.src / "claimed.txt", post_exchange="xs_eve", source="ann", cluster="X")
    assert posted.returncode == 0
    process = relay.foreground("ingest")
    assert wait_for(lambda: relay.downstream.count() >= 1, timeout=30)
    log = relay.stop(process)
    [relayed] = relay.downstream.notices()
    assert (relayed.source, relayed.from_cluster) == ("eve", "B")
    assert relayed.rel_path == "eve/claimed.txt" and (relay.tree / "eve" / "claimed.txt").exists()
    assert "replaced by 'eve' and 'B'" in log


def test_notices_another_pumps_sender_pushed_keep_their_source_and_cluster():
    def read(exchange, pushed, source="ann", from_cluster="A"):
        # pushed: the relay's report_upstream names pb, the feeder pump A's sender logs in as.
        notice = Notice(pubtime=now(), base_url="file:///in/", rel_path="ann/f", source=source,
                        from_cluster=from_cluster)
        item = relaying.ingest(lambda delivery: Item(notice, delivery), "B", pushed_by="pb" if pushed else None)(
            types.SimpleNamespace(exchange=exchange))
        return item.notice.source, item.notice.from_cluster
    # Read from the feeder's exchange by a relay with report_upstream: as it was on pump A.
    assert read("xs_pb", pushed=True) == ("ann", "A")
    # Without report_upstream, the feeder's exchange is the feeder's like any other.
    assert read("xs_pb", pushed=False) == ("pb", "B")
    # A notice naming no source is the feeder's; so is one claiming this very cluster, whose
    # log messages would otherwise stay on this pump, checked by no other.
    assert read("xs_pb", pushed=True, source="") == ("pb", "B")
    assert read("xs_pb", pushed=True, from_cluster="B") == ("pb", "B")
    # Only the exchange of report_upstream's user: carl, a source, cannot pass for ann.
    assert read("xs_carl", pushed=True) == ("carl", "B")
