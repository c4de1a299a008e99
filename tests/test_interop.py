"""dd and the real Sarracenia (sr3) mirror each other's trees, both ways, md5 and sha512."""
import pytest

from tests.support.pump import compare, manifest, wait_for
from tests.support.sr3peer import Sr3Peer
from tests.test_mirror import make_tree

CHECKSUMS = ["md5", "sha512"]


@pytest.mark.parametrize("method", CHECKSUMS)
def test_dd_subscribe_mirrors_what_sr3_post_announces(pump, method):
    expected = make_tree(pump.src, count=40, seed=len(method))
    pump.subscriber_config(extra="topic_prefix v03")
    with Sr3Peer(pump.base / "sr3home", pump.broker_url) as peer:
        files = sorted(p for p in pump.src.rglob("*") if p.is_file())
        peer.post(files, exchange=pump.exchange, post_base_url=pump.base_url,
                  post_base_dir=str(pump.src), checksum=method)
    subscriber = pump.foreground()
    arrived = wait_for(lambda: compare(expected, manifest(pump.dst)) == ([], [], []), timeout=60)
    _, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    assert log.count("201 delivered") == 40
    assert "[ERROR]" not in log


@pytest.mark.parametrize("post_format", ["sr_v03", "sr_v02"])
@pytest.mark.parametrize("method", CHECKSUMS)
def test_sr3_subscribe_mirrors_what_dd_post_announces(pump, method, post_format):
    # sr3 3.3.1 does not undo the %20/%23 it writes in v02 paths: keep v02 names plain.
    expected = make_tree(pump.src, count=40, seed=3) if post_format == "sr_v03" else {}
    if post_format == "sr_v02":
        for i in range(40):
            (pump.src / f"dir{i % 4}").mkdir(exist_ok=True)
            (pump.src / f"dir{i % 4}" / f"file{i}.dat").write_bytes(bytes([i]) * (i * 37))
        expected = manifest(pump.src)
    target = pump.base / "sr3mirror"
    with Sr3Peer(pump.base / "sr3home", pump.broker_url) as peer:
        # dd_post declares the exchange; the queue must exist before the notices go out.
        pump.post(pump.src / next(iter(expected)), post_format=post_format, checksum=method)
        peer.mirror("fromdd", pump.exchange, target, [("logStdout", "on")])
        posted = pump.post(pump.src, post_format=post_format, checksum=method)
        assert posted.returncode == 0, posted.stderr
        run = peer.subscribe_foreground("fromdd")
        arrived = wait_for(lambda: compare(expected, manifest(target)) == ([], [], []), timeout=90)
        run.stop()
        assert arrived, run.output[-3000:]
