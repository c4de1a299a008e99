"""What a relay (dd_sara) and a subscriber (dd_subscribe) announce after a delivery."""
import datetime
import types

import pytest

from dd.delivery import deliver
from dd.flow import Item
from dd.core.notice import Checksum, Notice, Op, Part
from dd.core.outcome import Outcome

PUBTIME = datetime.datetime(2026, 11, 2, 14, 30, 5, tzinfo=datetime.timezone.utc)
WHOLE = Checksum("sha256", "ab" * 32)


def delivered(tmp_path, code=201, part=None, checksum=WHOLE, op=Op.WRITE, computed=None):
    notice = Notice(pubtime=PUBTIME, base_url="http://source.example/", rel_path="obs/a.txt",
                    source="ann", from_cluster="east", to_clusters=["west"], op=op, size=10,
                    checksum=checksum, part=part)
    return Item(notice, mask=types.SimpleNamespace(directory=tmp_path / "tree"),
                outcome=Outcome(code, local_path=str(tmp_path / "tree" / "obs" / "a.txt"),
                                checksum=computed or checksum))


def cfg(tmp_path):
    return types.SimpleNamespace(post_broker="amqp://pump/", post_base_url="http://pump.example:8080/",
                                 post_base_dir=None)


def test_a_relay_keeps_checksum_source_clusters_and_pubtime_and_announces_the_whole_file(tmp_path):
    item = delivered(tmp_path, part=Part(4, 3, 2, 2, Checksum("md5", "00")))
    deliver.derive_outgoing(cfg(tmp_path), item, relay=True)
    out = item.outgoing
    assert (out.base_url, out.rel_path, out.part) == ("http://pump.example:8080/", "obs/a.txt", None)
    assert (out.checksum, out.size, out.source, out.pubtime) == (WHOLE, 10, "ann", PUBTIME)
    assert (out.from_cluster, out.to_clusters) == ("east", ["west"])


def test_an_unverifiable_checksum_is_replaced_by_what_the_pump_computed(tmp_path):
    computed = Checksum("sha512", "cd" * 64)
    item = delivered(tmp_path, checksum=Checksum("none", "x"), computed=computed)
    deliver.derive_outgoing(cfg(tmp_path), item, relay=True)
    assert item.outgoing.checksum == computed


def test_a_subscriber_announces_anew(tmp_path):
    item = delivered(tmp_path)
    deliver.derive_outgoing(cfg(tmp_path), item, relay=False)
    assert item.outgoing.pubtime > PUBTIME


@pytest.mark.parametrize("relay, code, part, op, announced", [
    (True, 201, None, Op.WRITE, True),
    (True, 304, None, Op.WRITE, True),       # in place and verified: after a crash, announce late
    (True, 304, Part(4, 3, 2, 2, Checksum("md5", "00")), Op.WRITE, False),
    (True, 304, None, Op.DELETE, False),
    (True, 202, Part(4, 3, 2, 0, Checksum("md5", "00")), Op.WRITE, False),   # a part stored
    (True, 502, None, Op.WRITE, False),
    (False, 304, None, Op.WRITE, False),
    (False, 201, None, Op.DELETE, True),
])
def test_which_outcomes_are_announced(tmp_path, relay, code, part, op, announced):
    delivery = deliver.Delivery(cfg(tmp_path), receiver=None, relay=relay)
    assert delivery.announces(delivered(tmp_path, code=code, part=part, op=op)) is announced
