"""A source's own part of a pump's tree: where each notice may act."""
import pytest

from dd.pump import namespace
from dd.core.errors import PathError
from dd.core.notice import Notice, Op, now


def notice(source="ann", op=Op.WRITE, readers=(), rename_from=None):
    return Notice(pubtime=now(), base_url="http://h/", rel_path="x", source=source, op=op,
                  readers=list(readers), rename_from=rename_from)


def test_a_source_acts_below_its_own_name_whatever_path_it_names():
    for rel_path, below in [("obs/x", "obs/x"), ("ann/obs/x", "obs/x"), ("carl/obs/x", "carl/obs/x"),
                            ("private/bob/x", "private/bob/x"), ("ann", "ann")]:
        assert namespace.place(notice(), rel_path) == namespace.Place(("ann",), below, None)


def test_private_data_lives_below_its_readers_then_its_source():
    place = namespace.place(notice(readers=["eve", "bob"]), "obs/x")
    assert place.namespace == ("private", "bob,eve", "ann") and place.private


def test_a_rename_moves_only_within_the_same_namespace():
    place = namespace.place(notice(op=Op.RENAME), "new", "private/bob/ann/secret")
    assert place == namespace.Place(("ann",), "new", "private/bob/ann/secret")


@pytest.mark.parametrize("source", ["", "private", "../x", "a/b", "1abc"])
def test_sources_that_cannot_own_files_are_refused(source):
    with pytest.raises(PathError) as caught:
        namespace.place(notice(source=source), "x")
    assert caught.value.rule == "namespace"
