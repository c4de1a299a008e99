"""dd.announce on a real tree: the kernel's answer for a directory's real path is realpath's, and
a path reached through a symlink that leaves post_base_dir is refused, one that stays is not."""
import hashlib
import os
import types

import pytest

from dd import announce
from dd.errors import PathError


@pytest.fixture
def tree(tmp_path):
    base = tmp_path / "base"
    (base / "a" / "b").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    for where in (base / "a" / "b", tmp_path / "outside"):
        (where / "f.txt").write_text("f")
    os.symlink(base / "a", base / "inside")             # stays below base
    os.symlink(tmp_path / "outside", base / "leaves")  # leaves it
    os.symlink("a/../a/b", base / "relative")
    return base


def test_real_directory_is_realpath(tree):
    for path in [tree, tree / "a" / "b", tree / "inside" / "b", tree / "leaves", tree / "relative",
                 tree / "a" / ".." / "a", tree / "missing" / "deeper", tree / "a" / "b" / "f.txt"]:
        assert announce.real_directory(str(path)) == os.path.realpath(path), path


def test_a_path_through_a_symlink_leaving_post_base_dir_is_refused(tree):
    cfg = types.SimpleNamespace(post_base_dir=str(tree), post_base_url="http://example.com/", source="",
                                cluster="", to_clusters=(), readers=(), checksum="sha512", blocksize=1)
    announcer = announce.Announcer(cfg)
    assert announcer.rel_path(str(tree / "a" / "b" / "f.txt")) == "a/b/f.txt"
    assert announcer.rel_path(str(tree / "inside" / "b" / "f.txt")) == "inside/b/f.txt"
    assert announcer.rel_path(str(tree / "a" / "." / "b" / "f.txt")) == "a/b/f.txt"
    with pytest.raises(PathError, match="symlink that leaves post_base_dir"):
        announcer.rel_path(str(tree / "leaves" / "f.txt"))
    with pytest.raises(PathError, match="outside post_base_dir"):
        announcer.rel_path(str(tree / ".." / "outside" / "f.txt"))
    notice, = announcer.notices(str(tree / "inside" / "b" / "f.txt"))
    assert (notice.rel_path, notice.size) == ("inside/b/f.txt", 1)


@pytest.mark.parametrize("size", [announce.OVERLAP_FROM - 1, announce.OVERLAP_FROM, 5 * announce.OVERLAP_FROM // 2])
@pytest.mark.parametrize("block_size", [None, 1 << 20])
def test_sums_are_those_of_the_bytes_on_either_side_of_the_overlap_threshold(tmp_path, size, block_size):
    # Big whole files are summed reading ahead on a helper thread (checksum.of_spans), small ones plainly.
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    sums = announce.part_sums(str(path), "f.bin", "sha512", size, block_size)
    spans = [(o, min(block_size, size - o)) for o in range(0, size, block_size)] if block_size else []
    assert sums == [hashlib.sha512(data[o:o + n]).hexdigest() for o, n in spans] + [hashlib.sha512(data).hexdigest()]

