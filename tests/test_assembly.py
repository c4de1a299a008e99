"""Receiving files in parts through the real receiver and file: transfers:
any order, duplicates, conflicts, versions, stale partials, edge sizes."""
import dataclasses
import hashlib
import os
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dd.core import parts, paths
from dd.core.credentials import Credentials, Url
from dd.delivery import assembly
from dd.source.announce import part_sums
from dd.core.notice import Checksum, Notice, Part, from_timestamp, now
from dd.core.outcome import Code
from dd.delivery.receive import Receiver
from dd.transfer import Transports

BLOCK = 64 << 10


def part_notices(path, base_dir, block_size, method="sha256", base_url=None):
    """The notices dd_post makes for `path` in parts of `block_size`."""
    size = os.path.getsize(path)
    rel_path = os.path.relpath(path, base_dir)
    *sums, whole_sum = part_sums(str(path), rel_path, method, size, block_size)
    count, remainder = parts.layout(size, block_size)
    whole = Notice(pubtime=now(), base_url=base_url or f"file://{base_dir}/", rel_path=rel_path,
                   size=size, checksum=Checksum(method, whole_sum),
                   mtime=from_timestamp(os.stat(path).st_mtime), mode=0o644)
    return [dataclasses.replace(whole, part=Part(block_size, count, remainder, n, Checksum(method, value)))
            for n, value in enumerate(sums)]


@pytest.fixture
def setup(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    receiver = Receiver(Transports(), download_checksum="sha256")
    return src, paths.Tree(dst), receiver


def write(path, size, seed=0):
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def hidden(tree):
    return sorted(name for name in os.listdir(tree.root) if name.startswith("."))


@pytest.mark.parametrize("size", [BLOCK, BLOCK + 1, 3 * BLOCK + 1, 5 * BLOCK, 2 * BLOCK - 1])
def test_parts_in_any_order_twice_make_the_file_once(setup, size):
    src, tree, receiver = setup
    f = write(src / "f", size)
    notices = part_notices(f, src, BLOCK)
    arrivals = notices + notices[::2]
    random.Random(size).shuffle(arrivals)
    codes = []
    for notice in arrivals:
        codes.append(receiver.receive(notice, tree, "f").code)
        assert os.path.exists(tree.path("f")) == (201 in codes)
    assert codes.count(201) == 1
    assert set(codes) <= {201, 202, 304}
    assert codes.count(202) == len(notices) - 1
    assert (src / "f").read_bytes() == open(tree.path("f"), "rb").read()
    assert hidden(tree) == []


def test_a_part_announced_with_two_checksums_is_refused(setup):
    src, tree, receiver = setup
    notices = part_notices(write(src / "f", 3 * BLOCK), src, BLOCK)
    assert receiver.receive(notices[0], tree, "f").code == 202
    forged = dataclasses.replace(notices[1], part=dataclasses.replace(notices[1].part, checksum=Checksum(
        "sha256", "0" * 64)))
    # The forged one fails its own check first (the data does not match) ...
    assert receiver.receive(forged, tree, "f").code == 502
    # ... and the true one is then refused, since its slot records the forged checksum.
    outcome = receiver.receive(notices[1], tree, "f")
    assert (outcome.code, outcome.rule) == (400, "part-checksum")


def test_a_newer_version_supersedes_the_partial_older_one(setup):
    src, tree, receiver = setup
    f = write(src / "f", 3 * BLOCK, seed=1)
    old = part_notices(f, src, BLOCK)
    assert receiver.receive(old[0], tree, "f").code == 202
    write(f, 3 * BLOCK, seed=2)
    os.utime(f, (os.stat(f).st_atime, os.stat(f).st_mtime + 10))
    new = part_notices(f, src, BLOCK)
    assert receiver.receive(new[2], tree, "f").code == 202
    assert len(hidden(tree)) == 2   # the older partial is gone, the newer one is there
    late = receiver.receive(old[1], tree, "f")
    assert (late.code, late.rule) == (409, "superseded")
    codes = [receiver.receive(n, tree, "f").code for n in new[:2]]
    assert codes == [202, 201]
    assert (src / "f").read_bytes() == open(tree.path("f"), "rb").read()
    assert hidden(tree) == []


def test_parts_that_do_not_make_the_whole_are_discarded(setup):
    src, tree, receiver = setup
    notices = part_notices(write(src / "f", 2 * BLOCK), src, BLOCK)
    wrong = [dataclasses.replace(n, checksum=Checksum("sha256", "1" * 64)) for n in notices]
    assert receiver.receive(wrong[0], tree, "f").code == 202
    outcome = receiver.receive(wrong[1], tree, "f")
    # A checksum failure of its own code, never "not found"; refused, not failed: the source
    # is wrong, and the retry store (which keeps 5xx) does not keep it.
    assert (outcome.code, outcome.rule) == (422, "checksum") and outcome.code is Code.WHOLE_MISMATCH
    assert not outcome.ok and not outcome.failed
    assert not os.path.exists(tree.path("f"))
    assert hidden(tree) == []


def test_stale_partials_are_removed(setup):
    src, tree, receiver = setup
    a = part_notices(write(src / "a", 2 * BLOCK), src, BLOCK)
    b = part_notices(write(src / "b", 2 * BLOCK), src, BLOCK)
    assert receiver.receive(a[0], tree, "a").code == 202
    for name in hidden(tree):
        os.utime(os.path.join(tree.root, name), (0, 0))
    receiver.stale_after = 3600
    assert receiver.receive(b[0], tree, "b").code == 202
    assert all(name.startswith(".b.") for name in hidden(tree))


def test_a_part_of_a_file_already_in_place_changes_nothing(setup):
    src, tree, receiver = setup
    notices = part_notices(write(src / "f", 2 * BLOCK), src, BLOCK)
    assert [receiver.receive(n, tree, "f").code for n in notices] == [202, 201]
    assert receiver.receive(notices[0], tree, "f").code == 304
    assert hidden(tree) == []


def test_hostile_part_geometry_is_refused():
    from dd.core.errors import NoticeError
    from dd.core.notice import validate
    good = Notice(pubtime=now(), base_url="http://h/", rel_path="f", size=10,
                  checksum=Checksum("sha256", "0" * 64))
    for geometry in [(4, 3, 2, 3), (0, 3, 2, 0), (4, 3, 1, 0), (4, 0, 2, 0), (4, 3, 4, 0),
                     (1, parts.MAX_BLOCK_COUNT + 1, 0, 0)]:
        notice = dataclasses.replace(good, size=10 if geometry[1] < 10 else geometry[1],
                                     part=Part(*geometry, Checksum("sha256", "0" * 64)))
        with pytest.raises(NoticeError) as error:
            validate(notice)
        assert error.value.rule == "parts"


def test_posting_splits_and_sums_parts(tmp_path):
    f = write(tmp_path / "f", 3 * BLOCK + 5)
    sums = part_sums(str(f), "f", "sha256", 3 * BLOCK + 5, BLOCK)
    data = f.read_bytes()
    assert sums[-1] == hashlib.sha256(data).hexdigest()
    assert sums[:-1] == [hashlib.sha256(data[o:o + n]).hexdigest()
                         for o, n in parts.spans(BLOCK, *parts.layout(len(data), BLOCK))]
    assert assembly.part_length(Part(BLOCK, 4, 5, 3, None)) == 5


@pytest.mark.parametrize("kind", ["file", "http", "sftp", "ftps"])
def test_every_transport_reads_parts_with_ranges(request, tmp_path, kind):
    """HTTP Range, SFTP seek, FTP REST, file seek: each part is read alone, at its offset."""
    credentials = None
    if kind == "file":
        root, base_url, options = tmp_path / "src", f"file://{tmp_path / 'src'}/", {}
        root.mkdir()
    elif kind == "ftps":
        server = request.getfixturevalue("ftp_server")
        root, base_url, options = server.root, server.ftps_url, {"ftps": {"ca_file": str(server.ca_file)}}
        credentials = Credentials([Url.parse(base_url).with_password(server.password)])
    else:
        server = request.getfixturevalue("nginx_server" if kind == "http" else "sshd_server")
        root, base_url = server.root, server.url.rstrip("/") + "/"
        options = {} if kind == "http" else {"sftp": {"known_hosts": str(server.known_hosts),
                                                      "key_filename": str(server.key_file)}}
    name = f"parts-{kind}-{os.getpid()}"
    f = write(root / name, 3 * BLOCK + 7, seed=3)
    notices = part_notices(f, root, BLOCK, base_url=base_url)
    random.Random(3).shuffle(notices)
    tree = paths.Tree(tmp_path / "dst")
    with Transports(credentials, timeout=10, options=options) as transports:
        receiver = Receiver(transports)
        codes = [receiver.receive(n, tree, name).code for n in notices]
    assert codes == [202, 202, 202, 201]
    assert f.read_bytes() == open(tree.path(name), "rb").read()


@given(st.integers(min_value=1, max_value=1 << 40), st.integers(min_value=1, max_value=1 << 30))
def test_spans_tile_the_file(size, block_size):
    count, remainder = parts.layout(size, block_size)
    if count > 10_000:
        block_size = -(-size // 10_000)
        count, remainder = parts.layout(size, block_size)
    spans = parts.spans(block_size, count, remainder)
    assert [offset for offset, _ in spans] == [n * block_size for n in range(count)]
    assert sum(length for _, length in spans) == size
    assert all(length == block_size for _, length in spans[:-1])
    assert (remainder or block_size) == spans[-1][1]


def test_a_completion_interrupted_is_done_again_by_the_same_part(setup, monkeypatch):
    src, tree, receiver = setup
    notices = part_notices(write(src / "f", 2 * BLOCK), src, BLOCK)
    assert receiver.receive(notices[0], tree, "f").code == 202

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(os, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt):
        receiver.receive(notices[1], tree, "f")
    monkeypatch.undo()
    assert not os.path.exists(tree.path("f"))
    assert receiver.receive(notices[1], tree, "f").code == 201
    assert (src / "f").read_bytes() == open(tree.path("f"), "rb").read()
    assert hidden(tree) == []
