"""Hostile and broken notices: each is refused with a named rule, nothing is written
outside the directory, and the flow goes on to the next notice; for dd_subscribe and
for dd_sara alike."""
import hashlib
import json
import os

import pytest

from tests.support.pump import manifest, wait_for


def notice(pump, rel_path, data=b"x", **changes):
    fields = {"pubtime": "2026-01-01T00:00:00.000000Z", "base_url": pump.base_url, "rel_path": rel_path,
              "source": "ann", "from_cluster": "", "to_clusters": [], "op": "write", "size": len(data),
              "checksum": {"method": "sha256", "value": hashlib.sha256(data).hexdigest()}}
    fields.update(changes)
    return json.dumps(fields).encode()


def landed(pump):
    """Where files of these notices land: a relay keeps them in their source's namespace."""
    return pump.dst / "ann" if pump.component == "sara" else pump.dst


def deliver_then_good(pump, bodies, tmp_path, extra=""):
    """Publish hostile bodies, then one good notice; return the subscriber's log once the good one is in."""
    (pump.src / "good.txt").write_bytes(b"good")
    pump.subscriber_config(extra=extra)
    for body in bodies:
        pump.publish_raw(body)
    pump.publish_raw(notice(pump, "good.txt", b"good"))
    subscriber = pump.foreground()
    arrived = wait_for(lambda: (landed(pump) / "good.txt").exists() and pump.queue_depth() == 0)
    status, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    assert status == 0
    assert "Traceback" not in log
    return log


@pytest.fixture(params=["subscribe", "sara"])
def pump(request, pump):
    """Every hostile case against both components that deliver: a subscriber and a relay."""
    pump.component = request.param
    return pump


@pytest.fixture
def outside(tmp_path):
    """A directory beside the subscriber's, which must stay untouched."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "victim.txt").write_text("original")
    return path


@pytest.mark.parametrize("rel_path, rule", [
    ("../outside/victim.txt", "dot-dot"),
    ("a/../../outside/victim.txt", "dot-dot"),
    ("%2e%2e/outside/victim.txt", "dot-dot"),
    ("%252e%252e/outside/victim.txt", "dot-dot"),
    ("\uff0e\uff0e/outside/victim.txt", "dot-dot"),
    ("/etc/passwd-dd-test", "absolute-path"),
    ("a//b.txt", "empty-component"),
])
def test_paths_that_would_leave_the_directory_are_refused(pump, tmp_path, outside, rel_path, rule):
    (pump.src / "victim.txt").write_bytes(b"evil")
    before = manifest(tmp_path)
    log = deliver_then_good(pump, [notice(pump, rel_path, b"evil")], tmp_path)
    assert f"[{rule}]" in log
    assert (outside / "victim.txt").read_text() == "original"
    assert manifest(landed(pump)) == {"good.txt": hashlib.sha256(b"good").hexdigest()}
    assert not os.path.exists("/etc/passwd-dd-test")
    written = [k for k in manifest(tmp_path) if k not in before]
    assert [k for k in written if k.split("/")[0] not in ("dst", "logs", "state", "config")] == []


def test_control_characters_in_names_are_refused(pump, tmp_path):
    log = deliver_then_good(pump, [notice(pump, "bell\x07.txt"), notice(pump, "nl\n.txt")], tmp_path)
    assert log.count("[control-character]") == 2


def test_a_symlinked_parent_cannot_redirect_a_write(pump, tmp_path, outside):
    landed(pump).mkdir(parents=True)
    os.symlink(outside, landed(pump) / "evil")
    (pump.src / "evil").mkdir()
    (pump.src / "evil" / "victim.txt").write_bytes(b"evil")
    log = deliver_then_good(pump, [notice(pump, "evil/victim.txt", b"evil")], tmp_path)
    assert "[symlink]" in log
    assert (outside / "victim.txt").read_text() == "original"


def test_schemes_not_allowed_are_refused(pump, tmp_path):
    log = deliver_then_good(pump, [notice(pump, "passwd", base_url="file:///etc/")], tmp_path)
    assert "[scheme]" in log
    assert not (landed(pump) / "passwd").exists()


def test_hosts_not_allowed_are_refused(pump, tmp_path):
    (pump.src / "elsewhere.txt").write_bytes(b"x")
    other_host = pump.base_url.replace("127.0.0.1", "localhost")
    log = deliver_then_good(pump, [notice(pump, "elsewhere.txt", base_url=other_host)], tmp_path,
                            extra="allowed_hosts 127.0.0.1")
    assert "[host]" in log and "'localhost' is not in allowed_hosts" in log
    assert not (landed(pump) / "elsewhere.txt").exists()


def test_bytes_that_do_not_match_the_checksum_are_never_renamed_into_place(pump, tmp_path):
    (pump.src / "liar.txt").write_bytes(b"actual bytes")
    body = notice(pump, "liar.txt", b"actual bytes",
                  checksum={"method": "sha256", "value": hashlib.sha256(b"other").hexdigest()})
    log = deliver_then_good(pump, [body], tmp_path)
    assert "[checksum]" in log
    assert not (landed(pump) / "liar.txt").exists()
    assert [p.name for p in landed(pump).iterdir()] == ["good.txt"]  # no temporary file left


def test_a_size_that_does_not_match_is_detected(pump, tmp_path):
    (pump.src / "short.txt").write_bytes(b"abc")
    body = notice(pump, "short.txt", b"abc", size=10)
    deliver_then_good(pump, [body], tmp_path)
    assert not (landed(pump) / "short.txt").exists()
    assert [p.name for p in landed(pump).iterdir()] == ["good.txt"]


@pytest.mark.parametrize("body, rule", [
    (b"{not json", "json"),          # starts like JSON, is not
    (b"[1, 2]", "format"),
    (b'{"rel_path": "x", broken', "json"),
    (b"\xff\xfe{\"rel_path\": 1}", "format"),
    (b'{"rel_path": "x"}', "missing-field"),
    (b'{"pubtime": 5, "rel_path": "x", "base_url": "http://h/", "op": "write"}', "type"),
    (b'{"rel_path": "x", "op": "explode"}', "op"),
    (b'{"rel_path": "x", "size": -1}' + b" " * 10, None),
    (b'{"rel_path": "' + b"[" * 100000 + b'"}', None),
])
def test_malformed_notices_are_refused_by_name(pump, tmp_path, body, rule):
    log = deliver_then_good(pump, [body], tmp_path)
    assert "refused notice" in log
    if rule:
        assert f"[{rule}]" in log


def test_oversized_notices_are_refused(pump, tmp_path):
    body = notice(pump, "big.txt", padding="x" * (1 << 20))
    log = deliver_then_good(pump, [body], tmp_path)
    assert "[oversized]" in log


def test_negative_and_absurd_sizes_are_refused(pump, tmp_path):
    log = deliver_then_good(pump, [notice(pump, "neg", size=-1), notice(pump, "huge", size=1 << 62)], tmp_path)
    assert log.count("[size]") == 2


def test_unsafe_mode_bits_are_never_applied(pump, tmp_path):
    (pump.src / "setuid.sh").write_bytes(b"#!/bin/sh\n")
    body = notice(pump, "setuid.sh", b"#!/bin/sh\n", mode="6777")
    deliver_then_good(pump, [body], tmp_path)
    mode = (landed(pump) / "setuid.sh").stat().st_mode & 0o7777
    assert mode == 0o775


def test_link_targets_outside_the_tree_are_refused(pump, tmp_path):
    log = deliver_then_good(pump, [notice(pump, "l1", op="link", link_target="/etc/passwd"),
                                   notice(pump, "a/l2", op="link", link_target="../../x")], tmp_path)
    assert log.count("[link-target]") == 2
    assert not os.path.lexists(landed(pump) / "l1")


def test_a_file_never_replaces_a_directory_of_the_tree(pump, tmp_path):
    (landed(pump) / "obs").mkdir(parents=True)
    (landed(pump) / "obs" / "kept.txt").write_text("kept")
    (pump.src / "obs").write_bytes(b"file")
    log = deliver_then_good(pump, [notice(pump, "obs", b"file")], tmp_path)
    assert "[is-a-directory]" in log
    assert (landed(pump) / "obs" / "kept.txt").read_text() == "kept"
