"""dd.source.announce on a real tree: the kernel's answer for a directory's real path is realpath's, and
a path reached through a symlink that leaves post_base_dir is refused, one that stays is not."""
import hashlib
import os
import types

import pytest
import xxhash

from dd.source import announce
from dd.core.errors import DDError, PathError
from dd.transfer import copy as copy_module


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
    # Big whole files are summed by copy(), reading ahead while it hashes; small ones plainly.
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    sums = announce.part_sums(str(path), "f.bin", "sha512", size, block_size)
    spans = [(o, min(block_size, size - o)) for o in range(0, size, block_size)] if block_size else []
    assert sums == [hashlib.sha512(data[o:o + n]).hexdigest() for o, n in spans] + [hashlib.sha512(data).hexdigest()]



@pytest.mark.parametrize("method", ["sha512", "sha256", "md5", "xxh128", "none"])
def test_part_sums_cut_across_reads_are_each_the_sum_of_their_bytes(tmp_path, method):
    # Parts longer than one copy() chunk, not a multiple of it, and a short last one.
    reference = {"sha512": hashlib.sha512, "sha256": hashlib.sha256, "md5": hashlib.md5,
                 "xxh128": xxhash.xxh3_128}.get(method)
    block_size, size = copy_module.CHUNK_SIZE * 2 + 1, copy_module.CHUNK_SIZE * 5 + 7
    data = os.urandom(size)
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    spans = [(o, min(block_size, size - o)) for o in range(0, size, block_size)] + [(0, size)]
    expected = [reference(data[o:o + n]).hexdigest() if reference else "" for o, n in spans]
    assert announce.part_sums(str(path), "f.bin", method, size, block_size) == expected


@pytest.mark.parametrize("block_size", [None, 1 << 20])
@pytest.mark.parametrize("change", [-1, +1])
def test_part_sums_refuse_a_file_that_changed_size_while_summed(tmp_path, change, block_size):
    size = announce.OVERLAP_FROM + 10
    path = tmp_path / "growing"
    path.write_bytes(os.urandom(size + change))
    with pytest.raises(DDError, match=f"cannot checksum {path}: .*changed while being summed"):
        announce.part_sums(str(path), "growing", "sha512", size, block_size)
