"""The safe path builder: wire paths become files inside their tree, or are refused by rule."""
import os

import pytest
from hypothesis import given, settings, strategies as st

from dd.core import parts, paths
from dd.core.errors import NoticeError, PathError


@pytest.mark.parametrize("rel_path, rule", [
    ("", "empty-path"), ("/abs", "absolute-path"), ("\\abs", "absolute-path"),
    ("..", "dot-dot"), ("a/../b", "dot-dot"), ("%2E%2E/x", "dot-dot"), ("%252e%252e/x", "dot-dot"),
    ("\uff0e\uff0e/x", "dot-dot"), ("..\\x", "dot-dot"), ("a/./b", "empty-component"),
    ("a//b", "empty-component"), ("a/", "empty-component"), ("bad\x00name", "control-character"),
    ("tab\there", "control-character"), ("x" * 256, "long-name"), ("a/" * 2100 + "b", "long-path"),
])
def test_refused_paths_name_their_rule(rel_path, rule):
    with pytest.raises(PathError) as caught:
        paths.split(rel_path)
    assert caught.value.rule == rule


@pytest.mark.parametrize("rel_path", ["a", "a b/c#d", "été/日本.txt", "...", "..a", "a..", ".hidden", "%41"])
def test_ordinary_names_pass(rel_path):
    assert "/".join(paths.split(rel_path)) == rel_path


@settings(max_examples=400, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_whatever_the_path_a_write_stays_inside_the_tree(tmp_path_factory, rel_path):
    base = tmp_path_factory.mktemp("sandbox")
    tree = paths.Tree(base / "tree")
    try:
        with tree.parent(rel_path) as (fd, leaf):
            fd2 = os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=fd)
            os.close(fd2)
    except PathError as error:
        assert error.rule
        return
    except OSError:
        return  # e.g. a component that is an existing file: refused by the filesystem
    written = [os.path.join(d, f) for d, _, files in os.walk(base) for f in files]
    assert written and all(w.startswith(str(base / "tree") + "/") for w in written)


def test_a_symlinked_parent_is_refused(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "tree" / "link")
    with pytest.raises(PathError) as caught:
        with paths.Tree(tmp_path / "tree").parent("link/file"):
            pass
    assert caught.value.rule == "symlink"


@pytest.mark.parametrize("options, expected", [
    ({}, "a/b/c.txt"), ({"strip": 1}, "b/c.txt"), ({"mirror": False}, "c.txt"),
    ({"flatten": "-"}, "a-b-c.txt"), ({"flatten": "/"}, "a/b/c.txt"), ({"strip": 2, "flatten": "_"}, "c.txt"),
])
def test_localize(options, expected):
    assert paths.localize("a/b/c.txt", **options) == expected


def test_strip_everything_is_refused():
    with pytest.raises(PathError):
        paths.localize("a/b", strip=2)


def test_unsafe_mode_bits_are_dropped():
    assert paths.safe_mode(0o6777) == 0o775
    assert paths.safe_mode(0o1644) == 0o644
    assert paths.safe_mode(None) is None


@given(st.integers(min_value=1, max_value=1 << 40), st.integers(min_value=1, max_value=1 << 30))
def test_parts_layout_adds_up(size, block_size):
    count, remainder = parts.layout(size, block_size)
    assert parts.size_of(block_size, count, remainder) == size
    first, last = parts.span(block_size, count, remainder, 0), parts.span(block_size, count, remainder, count - 1)
    assert first[0] == 0 and last[0] + last[1] == size
    assert all(0 < parts.span(block_size, count, remainder, i)[1] <= block_size for i in (0, count - 1))


@given(st.integers(min_value=0, max_value=1 << 42), st.sampled_from([0, 1, 1 << 20, 64 << 20]))
def test_chosen_block_size_splits_only_large_files(size, option):
    chosen = parts.choose_block_size(size, option)
    if chosen is not None:
        assert size > chosen >= 1
        assert parts.layout(size, chosen)[0] <= max(parts.AUTO_MAX_PARTS, -(-size // chosen))
    if option == 1:
        assert chosen is None


def test_inconsistent_part_metadata_is_refused():
    from dd.core.notice import Checksum, Part
    good = dict(block_size=10, block_count=3, remainder=5, block_number=2, checksum=Checksum("md5", "0"))
    parts.check(Part(**good), 25)
    for change, size in [({"block_number": 3}, 25), ({"block_size": 0}, 25), ({"remainder": 10}, 25),
                         ({}, 26), ({"block_count": 0}, 25)]:
        with pytest.raises(NoticeError) as caught:
            parts.check(Part(**{**good, **change}), size)
        assert caught.value.rule == "parts"


def _tree_with(tmp_path, namespace=("ann",)):
    tree = paths.Tree(tmp_path / "tree", namespace=namespace)
    (tmp_path / "tree" / "ann" / "d").mkdir(parents=True)
    (tmp_path / "tree" / "carl").mkdir()
    (tmp_path / "tree" / "carl" / "secret.txt").write_text("carl's")
    return tree


@pytest.mark.parametrize("links", [
    [("steal", "/etc/passwd")],                                 # absolute
    [("steal", "../carl/secret.txt")],                          # another source's file
    [("a/steal", "../../carl")],                                # another source's directory
    [("d/up", ".."), ("creds", "d/up/../config/credentials.conf")],  # '..' through a link
    [("d/up", "."), ("d/up2", "up/.."), ("x", "d/up2/../etc")],      # a chain of links
    [("later", "notyet/../../carl")],                           # '..' after what is not there yet
])
def test_a_link_never_leads_out_of_its_namespace(tmp_path, links):
    """The textual count of '..' cannot see that d/up is itself a link: physical resolution does."""
    tree = _tree_with(tmp_path)
    *allowed, (rel_path, target) = links
    for name, value in allowed:
        tree.check_link(name, value)
        with tree.parent(name) as (fd, leaf):
            os.symlink(value, leaf, dir_fd=fd)
    with pytest.raises(PathError) as caught:
        tree.check_link(rel_path, target)
    assert caught.value.rule == "link-target"


@pytest.mark.parametrize("rel_path, target", [
    ("l", "d"), ("d/l", "../d/x"), ("d/l", "x/y/z"), ("l", "./d/../d"), ("d/l", "..")])
def test_links_inside_the_namespace_pass(tmp_path, rel_path, target):
    _tree_with(tmp_path).check_link(rel_path, target)


def test_paths_never_leave_the_namespace(tmp_path):
    tree = _tree_with(tmp_path)
    with tree.parent("x/y.txt") as (fd, leaf):
        os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd))
    assert (tmp_path / "tree" / "ann" / "x" / "y.txt").exists()
    assert tree.path("x/y.txt") == str(tmp_path / "tree" / "ann" / "x" / "y.txt")


def test_a_directory_swapped_for_a_link_mid_write_cannot_redirect_it(tmp_path):
    """What was opened is written: a parent replaced by a link to elsewhere between the walk
    and the write leaves the write where the walk led (the directory, wherever it moved)."""
    tree = _tree_with(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    with tree.parent("d/file") as (fd, leaf):
        os.rename(tmp_path / "tree" / "ann" / "d", tmp_path / "moved")
        os.symlink(outside, tmp_path / "tree" / "ann" / "d")
        os.close(os.open(leaf, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600, dir_fd=fd))
    assert list(outside.iterdir()) == []
    assert (tmp_path / "moved" / "file").exists()
    with pytest.raises(PathError) as caught:    # and the next walk refuses the link
        with tree.parent("d/other"):
            pass
    assert caught.value.rule == "symlink"


def test_a_private_tree_keeps_its_files_to_the_data_servers_group(tmp_path):
    tree = paths.Tree(tmp_path / "tree", namespace=("private", "bob", "ann"), private_group=os.getgid())
    with tree.parent("obs/x") as (fd, leaf):
        pass
    for directory in ("private", "private/bob", "private/bob/ann", "private/bob/ann/obs"):
        st = (tmp_path / "tree" / directory).stat()
        assert (st.st_mode & 0o777, st.st_gid) == (0o750, os.getgid()), directory
    assert tree.file_mode(0o777) == 0o640 and tree.file_mode(None) == 0o640 and tree.file_mode(0o600) == 0o600
    assert paths.Tree(tmp_path).file_mode(0o777) == 0o775
