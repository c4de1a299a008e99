"""Attacks on a live pump by users with ordinary accounts, each of which must fail.

The pump is set up as the admin guide sets one up: dd_audit's users on a vhost of their
own (sources ann and anne, subscribers bob and eve, the pump's feeder), one dd_sara per
source ingesting its own exchange into the one tree, and the data server (nginx, its
workers as www-data) with private data behind the readers' data server passwords.
anne attacks with hand-made notices on her own exchange, as any source could; after each
attack nothing outside her own namespace has changed, and the data server gives nothing
it should not."""
import hashlib
import json
import os
import shutil
import secrets
import subprocess
import sys
import time

import amqp
import amqp.exceptions
import pytest
import urllib3

from dd.core import formats
from tests.support.brokers import queue_counts
from tests.support.pump import reachable_by_workers, wait_for
from tests.support.servers import free_port
from tests.test_audit import Site

HTTP = urllib3.PoolManager(retries=False, timeout=10)


class LivePump:
    def __init__(self, base, site, nginx_server):
        self.base, self.site = base, site
        self.tree = base / "tree"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.n = n = site.names
        self.data_passwords = {n[who]: secrets.token_hex(8) for who in ("ann", "anne", "bob", "eve")}
        with open(site.config_dir / "credentials.conf", "a") as credentials:
            credentials.writelines(f"http://{user}:{password}@127.0.0.1:{self.port}/\n"
                                   for user, password in self.data_passwords.items())
        self.sources = nginx_server.root / base.name
        self.sources.mkdir()
        self.source_url = f"{nginx_server.url}{base.name}/"
        self.env = dict(os.environ, DD_CONFIG_DIR=str(site.config_dir), DD_STATE_DIR=str(base / "state"),
                        DD_LOG_DIR=str(base / "logs"))
        (site.config_dir / "sara").mkdir()
        feeder = f"amqp://{n['pump']}@127.0.0.1/{site.vhost}"
        for who in ("ann", "anne"):
            serve = f"data_server_port {self.port}\n" if who == "ann" else ""
            (site.config_dir / "sara" / f"{who}.conf").write_text(
                f"broker {feeder}\nexchange xs_{n[who]}\npost_broker {feeder}\npost_exchange xpublic\n"
                f"post_base_url {self.url}\n{serve}directory {self.tree}\n")
            self.command("sara", "declare", who)
        self.logs = {who: base / f"{who}.log" for who in ("ann", "anne")}
        self.processes = []
        for who, log in self.logs.items():
            with open(log, "w") as out:
                self.processes.append(subprocess.Popen(
                    [sys.executable, "-m", "dd.cli.main", "sara", "foreground", who], env=self.env,
                    stdout=subprocess.DEVNULL, stderr=out))
        assert wait_for(lambda: self._serving(), timeout=30), self.logs["ann"].read_text()
        # What the pump announces, seen by the test (guest may read everything).
        self.observer = amqp.Connection("127.0.0.1:5672", userid="guest", password="guest",
                                        virtual_host=site.vhost)
        self.observer.connect()
        self.channel = self.observer.channel()
        self.announced = {}
        for exchange in ("xpublic", f"xpriv_{n['bob']}", f"xpriv_{n['anne']}"):
            queue = self.channel.queue_declare("", exclusive=True)[0]
            self.channel.queue_bind(queue, exchange, "#")
            self.announced[exchange] = queue

    def _serving(self):
        try:
            HTTP.request("GET", self.url)
            return True
        except urllib3.exceptions.HTTPError:
            return False

    def command(self, *args):
        result = subprocess.run([sys.executable, "-m", "dd.cli.main", *args], env=self.env, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result

    def publish(self, who, rel_path, data=b"", *, base_url=None, **fields):
        """`who` announces on its own exchange, as its dd_post would (or a hand-made notice)."""
        if base_url is None and data is not None and fields.get("op", "write") in ("write", "rename"):
            path = self.sources / secrets.token_hex(4) / rel_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            base_url = self.source_url + str(path.parent.relative_to(self.sources)) + "/"
        body = {"pubtime": "2026-12-01T00:00:00.000000Z", "base_url": base_url or self.source_url,
                "rel_path": rel_path, "source": self.n[who], "from_cluster": "", "to_clusters": [], "op": "write",
                "size": len(data or b""), "checksum": {"method": "sha256",
                                                       "value": hashlib.sha256(data or b"").hexdigest()}}
        body.update(fields)
        if body["op"] in ("link", "delete"):
            del body["size"], body["checksum"]
        with self.site.connect(who) as connection:
            channel = connection.channel()
            channel.confirm_select()
            channel.basic_publish(amqp.Message(json.dumps(body).encode(), delivery_mode=2,
                                               user_id=self.n[who]),
                                  exchange=f"xs_{self.n[who]}", routing_key="v02.post.x")

    def settle(self):
        """Wait until both relays have handled everything announced to them."""
        queues = [(self.base / "state" / "sara" / who / "queue").read_text().strip() for who in self.logs]
        assert wait_for(lambda: all(queue_counts(self.site.vhost, q) == (0, 0) for q in queues), timeout=60)
        time.sleep(0.3)     # the flow logs the batch after its acknowledgement

    def log(self, who):
        return self.logs[who].read_text()

    def notices(self, exchange):
        found = []
        while (message := self.channel.basic_get(self.announced[exchange], no_ack=True)) is not None:
            found.append(formats.decode(message.body, message.properties.get("application_headers")))
        return found

    def get(self, path, user=None, password=None):
        headers = {}
        if user:
            headers = urllib3.make_headers(basic_auth=f"{user}:{password or self.data_passwords[user]}")
        response = HTTP.request("GET", self.url + path, headers=headers)
        return response.status, response.data

    def outside_annes(self):
        """Everything in the tree but anne's own namespaces, with contents and link targets."""
        seen = {}
        for top, directories, files in os.walk(self.tree):
            for name in files + directories:
                path = os.path.join(top, name)
                rel = os.path.relpath(path, self.tree).split(os.sep)
                if rel[0] == self.n["anne"] or rel[0] == "private" and rel[2:3] == [self.n["anne"]]:
                    continue
                seen[path] = os.readlink(path) if os.path.islink(path) else (
                    open(path, "rb").read() if os.path.isfile(path) else "dir")
        return seen

    def close(self):
        for process in self.processes:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        subprocess.run([sys.executable, "-m", "dd.cli.main", "sara", "stop", "ann"], env=self.env,
                       capture_output=True, timeout=60)
        self.observer.close()
        shutil.rmtree(self.sources, ignore_errors=True)
        assert "Traceback" not in self.log("ann") + self.log("anne")


@pytest.fixture(scope="module")
def live(tmp_path_factory, vhost, nginx_server):
    base = tmp_path_factory.mktemp("boundaries")
    reachable_by_workers(base)
    site = Site(base)
    status, out = site.audit("declare")
    assert status == 0, out
    pump = LivePump(base, site, nginx_server)
    # ann's files, which anne will go after.
    n = site.names
    pump.publish("ann", "secret.txt", b"ann's secret")
    pump.publish("ann", "for-bob.txt", b"for bob only", readers=[n["bob"]])
    pump.publish("ann", "for-anne.txt", b"for anne", readers=[n["anne"]])
    pump.settle()
    assert (pump.tree / n["ann"] / "secret.txt").read_bytes() == b"ann's secret", pump.log("ann")
    yield pump
    pump.close()
    site.close()


def test_link_notices_lead_nowhere_outside_their_source(live):
    n = live.site.names
    before = live.outside_annes()
    links = {"steal": f"../{n['ann']}/secret.txt", "steal-private": f"../private/{n['bob']}/{n['ann']}/for-bob.txt",
             "absolute": "/etc/passwd", "d/up": "..", "creds": "d/up/../../config/credentials.conf",
             "annes-view-of-ann": f"../{n['ann']}", "creds2": "d/up/d/up/../../../state"}
    live.publish("anne", "mine.txt", b"anne's own")
    for rel_path, target in links.items():
        live.publish("anne", rel_path, None, op="link", link_target=target)
    live.settle()
    log = live.log("anne")
    assert log.count("[link-target]") == len(links) - 1, log[-3000:]        # d/up -> .. stays inside
    assert os.readlink(live.tree / n["anne"] / "d" / "up") == ".."
    for rel_path in links:
        status, data = live.get(f"{n['anne']}/{rel_path}")
        assert status != 200 and b"ann's" not in data and b"for bob" not in data, rel_path
    # A link planted past every check (another process, a race) is still never followed.
    os.symlink(live.tree / n["ann"] / "secret.txt", live.tree / n["anne"] / "planted")
    os.symlink(live.site.config_dir / "credentials.conf", live.tree / n["anne"] / "planted-creds")
    assert live.get(f"{n['anne']}/planted")[0] == 403
    assert live.get(f"{n['anne']}/planted-creds")[0] == 403
    assert live.get(f"{n['anne']}/mine.txt") == (200, b"anne's own")
    assert live.get(f"{n['anne']}/d/up/mine.txt")[0] in (403, 404)     # even her own file, through a link
    assert live.outside_annes() == before


def test_a_source_cannot_overwrite_delete_or_move_anothers_files(live):
    n = live.site.names
    before = live.outside_annes()
    ann_secret, bobs = f"{n['ann']}/secret.txt", f"private/{n['bob']}/{n['ann']}/for-bob.txt"
    live.publish("anne", ann_secret, b"anne was here")
    live.publish("anne", bobs, b"anne was here")
    live.publish("anne", ann_secret, None, op="delete")
    live.publish("anne", bobs, None, op="delete")
    live.publish("anne", "moved.txt", b"ann's secret", op="rename", rename_from=ann_secret)
    live.publish("anne", "moved-private.txt", b"for bob only", op="rename", rename_from=bobs)
    live.settle()
    assert live.outside_annes() == before, live.log("anne")[-3000:]
    assert live.get(ann_secret) == (200, b"ann's secret")
    assert live.get(bobs, n["bob"]) == (200, b"for bob only")
    # What anne named landed in her own namespace, under the names she gave.
    assert (live.tree / n["anne"] / n["ann"] / "secret.txt").exists() is False     # written, then deleted
    assert (live.tree / n["anne"] / "private" / n["bob"] / n["ann"] / "for-bob.txt").exists() is False
    assert (live.tree / n["anne"] / "moved.txt").read_bytes() == b"ann's secret"   # from her own URL


def test_private_data_is_announced_to_and_served_for_its_readers_only(live):
    n = live.site.names
    live.publish("ann", "eyes-only.txt", b"eyes only", readers=[n["bob"]])
    live.settle()
    where = f"private/{n['bob']}/{n['ann']}/eyes-only.txt"
    public = [x.rel_path for x in live.notices("xpublic")]
    to_bob = {x.rel_path: x for x in live.notices(f"xpriv_{n['bob']}")}
    assert not any("eyes-only" in p or "for-bob" in p for p in public), public
    assert to_bob[f"{n['ann']}/eyes-only.txt"].base_url == f"{live.url}private/{n['bob']}/"
    assert to_bob[f"{n['ann']}/eyes-only.txt"].readers == [n["bob"]]
    # eve cannot listen to bob's private exchange: the broker refuses her.
    with live.site.connect("eve") as connection:
        channel = connection.channel()
        queue = channel.queue_declare(f"q_{n['eve']}.spy", exclusive=True)[0]
        with pytest.raises(amqp.exceptions.AccessRefused):
            channel.queue_bind(queue, f"xpriv_{n['bob']}", "#")
    assert live.get(where)[0] == 401
    assert live.get(where, n["eve"])[0] == 401
    assert live.get(where, n["bob"], live.site.passwords[n["bob"]])[0] == 401   # his broker password
    assert live.get(where, n["bob"]) == (200, b"eyes only")
    # On disk: for the data server's group only, whatever mode the notice asked for.
    file = live.tree / where
    assert file.stat().st_mode & 0o777 == 0o640
    for directory in (file.parent, file.parent.parent, live.tree / "private"):
        assert directory.stat().st_mode & 0o777 == 0o750
    assert {p.stat().st_gid for p in (file, file.parent)} == {33}     # www-data


def test_the_relay_fetches_only_with_the_sources_own_password_and_keeps_private_data_private(live):
    n = live.site.names
    bobs_url = f"{live.url}private/{n['bob']}/{n['ann']}/"
    annes_url = f"{live.url}private/{n['anne']}/{n['ann']}/"
    # anne points the pump at bob's private file: the relay has only anne's password for her.
    live.publish("anne", "for-bob.txt", b"for bob only", base_url=bobs_url)
    # anne is a reader of for-anne.txt: the relay may fetch it for her, and keeps it hers alone.
    live.publish("anne", "for-anne.txt", b"for anne", base_url=annes_url)
    live.settle()
    log = live.log("anne")
    assert "[denied]" in log and "for-bob.txt" in log
    assert not (live.tree / n["anne"] / "for-bob.txt").exists()
    assert not any(p.name == "for-bob.txt" for p in (live.tree / "private").rglob("*") if n["anne"] in p.parts[-2:])
    assert not (live.tree / n["anne"] / "for-anne.txt").exists()
    kept = live.tree / "private" / n["anne"] / n["anne"] / "for-anne.txt"
    assert kept.read_bytes() == b"for anne", log[-3000:]
    assert live.get(f"private/{n['anne']}/{n['anne']}/for-anne.txt")[0] == 401
    assert not any("for-anne" in x.rel_path for x in live.notices("xpublic"))
    assert any(x.rel_path == f"{n['anne']}/for-anne.txt" for x in live.notices(f"xpriv_{n['anne']}"))
