"""Generated hostile notices through decode → validate → path builder, in a sandbox:
no unhandled exception, nothing written outside the sandbox, every refusal named.
This is the fast subset; tools/fuzz.py runs the long one."""
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dd.core import paths
from tests.support.fuzzing import exercise, snapshot

# Pieces that break naive path handling, mixed with ordinary text.
TRICKY = ["..", ".", "/", "//", "%2e", "%2E%2e", "%252e", "%2f", "\\", "\uff0e", "\u2024", "\x00", "\n",
          "\x7f", "\x85", "~", "*", "#", "?", " ", "é", "\udcff", "\U0001f600", "a" * 300]
pieces = st.one_of(st.sampled_from(TRICKY), st.text(string.ascii_letters + "._-/%", max_size=12))
hostile_path = st.lists(pieces, max_size=8).map("".join)
scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   hostile_path, st.lists(hostile_path, max_size=3), st.dictionaries(hostile_path, hostile_path,
                                                                                     max_size=3))
checksum = st.fixed_dictionaries({"method": st.sampled_from(["sha512", "md5", "sha256", "xxh128", "name", "none",
                                                             "bogus", ""]),
                                  "value": st.text(string.hexdigits, max_size=130)})
part = st.fixed_dictionaries({"block_size": st.integers(-5, 2**40), "block_count": st.integers(-5, 2**20),
                              "remainder": st.integers(-5, 2**40), "block_number": st.integers(-5, 2**20),
                              "checksum": checksum})
valid_checksum = st.sampled_from([{"method": "sha512", "value": "ab" * 64}, {"method": "md5", "value": "0" * 32},
                                  {"method": "none", "value": ""}])
# Mostly well-formed notices, so that the path builder is reached, with hostile paths and
# link targets, and now and then one field replaced by anything at all.
well_formed = st.fixed_dictionaries(
    {"pubtime": st.just("2026-11-29T06:00:00.000000Z"), "base_url": st.just("http://127.0.0.1/"),
     "rel_path": hostile_path, "source": st.just("ann"), "from_cluster": st.just(""),
     "to_clusters": st.just([]), "op": st.sampled_from(["write", "write", "delete", "link", "rename"]),
     "size": st.integers(0, 10**6), "checksum": valid_checksum},
    optional={"link_target": hostile_path, "rename_from": hostile_path, "part": part})
dd_v02 = st.tuples(well_formed, st.one_of(st.none(), st.tuples(st.sampled_from(
    ["pubtime", "base_url", "rel_path", "op", "size", "checksum", "mode", "mtime", "to_clusters"]), scalar))).map(
    lambda pair: {**pair[0], **dict([pair[1]] if pair[1] else [])})
sr_v03 = st.fixed_dictionaries(
    {"pubTime": st.sampled_from(["20261129T060000.123", "2026-11-29T06:00:00", "x"]),
     "baseUrl": st.sampled_from(["http://127.0.0.1/", "ftp://h/", ""]), "relPath": hostile_path},
    optional={"identity": checksum, "size": scalar, "fileOp": st.dictionaries(
        st.sampled_from(["link", "rename", "remove", "directory"]), scalar, max_size=2),
        "mode": scalar, "blocks": scalar, "source": scalar})
def as_json(fields):
    return json.dumps(fields, ensure_ascii=False).encode("utf-8", "surrogatepass")


sr_v02_line = st.builds(lambda t, u, p: f"{t} {u} {p}".encode("utf-8", "surrogatepass"),
                        st.sampled_from(["20261129060000.123", "20261129T060000", "x"]),
                        st.sampled_from(["http://127.0.0.1/", "file:/"]), hostile_path)
headers = st.dictionaries(st.sampled_from(["sum", "parts", "mode", "link", "oldname", "source", "mtime",
                                           "to_clusters", "from_cluster", "topic"]),
                          st.one_of(hostile_path, st.sampled_from(["s,ab", "d," + "0" * 32, "L,x", "R,0",
                                                                   "i,4,3,2,1", "1,5,1,0,0", "p,1,1,0,0"])),
                          max_size=5)
dd_message = st.tuples(dd_v02.map(as_json), st.just({}))
# one_of has no weights: the well-formed dd notices, which reach the path builder, come most often.
message = st.one_of(dd_message, dd_message, dd_message, st.tuples(sr_v03.map(as_json), st.just({})),
                    st.tuples(sr_v02_line, headers), st.tuples(st.binary(max_size=200), headers))


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    parent = tmp_path_factory.mktemp("fuzz")
    (parent / "outside.txt").write_text("must stay")
    root = parent / "sandbox"
    root.mkdir()
    return parent, root


@settings(max_examples=3000, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=message)
def test_generated_messages_are_refused_with_a_rule_or_stay_in_the_sandbox(sandbox, message):
    parent, root = sandbox
    before = snapshot(parent, root)
    outcome = exercise(*message, paths.Tree(root))
    assert outcome
    assert snapshot(parent, root) == before
