"""Random sequences of notices from two sources against one pump tree, served by the
pump's real nginx: files, links, renames and deletes, public and private, with hostile
paths and link targets among them.  After every notice, no source has changed another
source's entries, nothing outside the tree has changed, and no URL of the data server
returns a private file without its reader's password, nor anything through a link.

The relay's delivery step runs in-process (dd.delivery.deliver.Delivery with a real Receiver,
configuration and htpasswd files), so thousands of notices take seconds; the data server
is a real nginx with the configuration dd_sara writes."""
import hashlib
import itertools
import os
import shutil
import stat
import types
from pathlib import Path

import pytest
import urllib3
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from dd.core import config
from dd.delivery import deliver
from dd.pump import nginx, private, relay
from dd.core.credentials import Credentials, Url
from dd.core.environment import Environment
from dd.flow import Item
from dd.core.notice import Checksum, Notice, Op, now
from dd.delivery.receive import Receiver
from dd.transfer import Transports
from tests.support.servers import NGINX, _start, _stop, free_port

SOURCES = ("ann", "carl")
PASSWORDS = {"bob": "bob-data-pw", "ann": "ann-data-pw", "carl": "carl-data-pw"}
#: Small alphabets, so that sequences collide on the same names and reach each other's paths.
PLAIN = ["a", "b", "d/x"]
NAMES = PLAIN * 3 + ["d/up", "ann/a", "carl/a", "private/bob/ann/a", "private/bob/carl/a", "../carl/a",
                     "d/../../carl/a", "%2e%2e/carl/a"]
TARGETS = PLAIN * 3 + ["x/../a", "d", "..", "../carl", "../carl/a", "/etc/passwd", "d/up/..", "d/up/../..", "up",
                       "up/../a", "../private/bob/carl/a", "../../private"]
HTTP = urllib3.PoolManager(retries=False, timeout=5)


@pytest.fixture(scope="module")
def data_server(tmp_path_factory):
    """The pump's tree, its htpasswd directory and a real nginx serving them as dd_sara's does."""
    base = tmp_path_factory.mktemp("fuzzpump")
    tree, passwords, server = base / "tree", base / "private", base / "nginx"
    for directory in (tree, passwords, server):
        directory.mkdir()
    for kind in nginx.TEMP_KINDS:
        (server / kind).mkdir()
    port = free_port()
    (server / "nginx.conf").write_text(nginx.config(base=server, root=tree, port=port, user=("root", "root"),
                                                    private=passwords))
    process = _start(nginx.command(NGINX, server), port, server / "nginx.out")
    yield types.SimpleNamespace(base=base, tree=tree, passwords=passwords, url=f"http://127.0.0.1:{port}/")
    _stop(process)


def _snapshot(root):
    """{path: what it is} below root, links as links: the state a notice may change."""
    seen = {}
    for top, directories, files in os.walk(root):
        for name in directories + files:
            path = os.path.join(top, name)
            st_ = os.lstat(path)
            if stat.S_ISLNK(st_.st_mode):
                seen[path] = ("link", os.readlink(path))
            elif stat.S_ISREG(st_.st_mode):
                seen[path] = ("file", hashlib.sha256(Path(path).read_bytes()).hexdigest())
            else:
                seen[path] = ("dir",)
    return seen


class PumpTree(RuleBasedStateMachine):
    data_server = None      # set by the test

    def __init__(self):
        super().__init__()
        server = self.data_server
        for directory in (server.tree, server.passwords):
            shutil.rmtree(directory)
            directory.mkdir()
        self.sources = server.base / "sources"
        shutil.rmtree(self.sources, ignore_errors=True)
        self.sources.mkdir()
        env = Environment(stdout=None, stderr=None, config_dir=server.base / "config",
                          state_dir=server.base / "state", log_dir=server.base / "logs", environ={})
        cfg = config.load("sara", None, [("directory", str(server.tree)), ("post_base_url", server.url),
                                         ("allowed_schemes", "file")], env)
        credentials = Credentials([Url.parse(f"{server.url.replace('://', f'://{u}:{p}@')}")
                                   for u, p in PASSWORDS.items()])
        htpasswd = private.Htpasswd(server.passwords, credentials, Url.parse(server.url))
        self.delivery = deliver.Delivery(cfg, Receiver(Transports()), relay=True,
                                         placement=relay.SourceNamespaces(htpasswd, Credentials(), own=(server.tree,)))
        self.counter = itertools.count()

    def _act(self, source, notice):
        before = _snapshot(self.data_server.tree)
        item = Item(notice)
        assert self.delivery.accept(item)
        self.delivery.work(item)
        assert item.outcome is not None and "Traceback" not in item.outcome.message
        after = _snapshot(self.data_server.tree)
        tree = str(self.data_server.tree)
        changed = {p for p in set(before) | set(after) if before.get(p) != after.get(p)}
        for path in changed:
            parts = os.path.relpath(path, tree).split(os.sep)
            owner = parts[2] if parts[0] == "private" and len(parts) > 2 else parts[0]
            # A source's notice creates its own directory, and private/<readers>/ on the way to its own.
            assert owner == source or parts[0] == "private" and len(parts) <= 2, \
                f"{source}'s {notice.op.value} of {notice.rel_path!r} changed {path}: {item.outcome}"

    def _write_source_file(self, rel_path, data):
        """A file the notice's URL names, in a directory of its own; None when rel_path cannot be one."""
        where = self.sources / str(next(self.counter))
        target = where / rel_path
        if ".." in rel_path.split("/") or rel_path.startswith("/"):
            return f"file://{where}/"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"file://{where}/"

    @rule(source=st.sampled_from(SOURCES), rel_path=st.sampled_from(NAMES), data=st.binary(max_size=20),
          private_=st.booleans())
    def write(self, source, rel_path, data, private_):
        base_url = self._write_source_file(rel_path, data)
        self._act(source, Notice(pubtime=now(), base_url=base_url, rel_path=rel_path, source=source,
                                 size=len(data), checksum=Checksum("sha256", hashlib.sha256(data).hexdigest()),
                                 readers=["bob"] if private_ else []))

    @rule(source=st.sampled_from(SOURCES), rel_path=st.sampled_from(NAMES), to=st.sampled_from(TARGETS),
          private_=st.booleans())
    def link(self, source, rel_path, to, private_):
        self._act(source, Notice(pubtime=now(), base_url="file:///nowhere/", rel_path=rel_path, source=source,
                                 op=Op.LINK, link_target=to, readers=["bob"] if private_ else []))

    @rule(source=st.sampled_from(SOURCES), rel_path=st.sampled_from(NAMES), private_=st.booleans())
    def delete(self, source, rel_path, private_):
        self._act(source, Notice(pubtime=now(), base_url="file:///nowhere/", rel_path=rel_path, source=source,
                                 op=Op.DELETE, readers=["bob"] if private_ else []))

    @rule(source=st.sampled_from(SOURCES), rel_path=st.sampled_from(NAMES), old=st.sampled_from(NAMES),
          data=st.binary(max_size=20), private_=st.booleans())
    def rename(self, source, rel_path, old, data, private_):
        base_url = self._write_source_file(rel_path, data)
        self._act(source, Notice(pubtime=now(), base_url=base_url, rel_path=rel_path, source=source,
                                 op=Op.RENAME, rename_from=old, size=len(data),
                                 checksum=Checksum("sha256", hashlib.sha256(data).hexdigest()),
                                 readers=["bob"] if private_ else []))

    @invariant()
    def served_only_as_allowed(self):
        tree = self.data_server.tree
        for path, what in _snapshot(tree).items():
            url = self.data_server.url + urllib3.util.parse_url(
                "/" + os.path.relpath(path, tree)).path.lstrip("/")
            anonymous = HTTP.request("GET", url)
            if what[0] == "link" or what[0] == "dir":
                assert anonymous.status != 200 or what[0] == "dir", f"{url} served through a link"
                continue
            content = Path(path).read_bytes()
            if os.path.relpath(path, tree).startswith("private/"):
                assert anonymous.status == 401, f"{url}: {anonymous.status} without a password"
                as_carl = HTTP.request("GET", url, headers=urllib3.make_headers(
                    basic_auth=f"carl:{PASSWORDS['carl']}"))
                assert as_carl.status == 401, f"{url}: {as_carl.status} for carl, who is not its reader"
                as_bob = HTTP.request("GET", url, headers=urllib3.make_headers(
                    basic_auth=f"bob:{PASSWORDS['bob']}"))
                assert (as_bob.status, as_bob.data) == (200, content)
            else:
                assert (anonymous.status, anonymous.data) == (200, content)


def test_no_source_touches_another_and_nothing_private_is_served_to_strangers(data_server):
    PumpTree.data_server = data_server
    PumpTree.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
    PumpTree.TestCase().runTest()
