"""Log messages back to their sources over any topology of pumps, each a vhost of one
RabbitMQ set up by dd_audit, with its relays, its log router and a log index of its own.
No router names its upstream: each sends a log message back to the pump the notice came
from, as the relay that read it recorded in the log index.  In a V (A and B both feed C)
each source reads only its own log messages; in a chain A → B → C they climb two pumps;
and when A's dd_sender pushes to B, they come back the way the push went."""
import secrets
import urllib.parse

import pytest

from dd.core import report
from dd.components import shovel
from dd.core.notice import Checksum, Notice, now
from dd.flow import Item
from dd.store import logindex
from tests.support.pump import wait_for
from tests.test_audit import api
from tests.test_logroute import conf, logs_so_far, start, stop


class Pumps:
    """Pumps on the machine's RabbitMQ: `declared` maps each pump's name to the dd_audit
    declarations ("source ann", "feeder pc", ...) of its users."""

    def __init__(self, pump, declared):
        self.pump = pump
        tag = secrets.token_hex(3)
        names = {line.split()[1] for lines in declared.values() for line in lines}
        self.users = {who: f"t{tag}{who}" for who in sorted(names)}
        passwords = {name: secrets.token_hex(8) for name in self.users.values()}
        self.vhosts = {p: f"dd-{p.lower()}-{tag}" for p in declared}
        self.config = pump.base / "config"
        self.config.mkdir(exist_ok=True)
        credentials = self.config / "credentials.conf"
        credentials.write_text("amqp://guest:guest@127.0.0.1/\n" + "".join(
            f"amqp://{name}:{password}@127.0.0.1/\n" for name, password in passwords.items()))
        credentials.chmod(0o600)
        for p, lines in declared.items():
            admin = self.config / f"admin{p}.conf"
            admin.write_text(f"admin amqp://guest@127.0.0.1/{self.vhosts[p]}\n" + "".join(
                f"declare {line.split()[0]} {self.users[line.split()[1]]}\n" for line in lines))
            pump.command("audit", "--config", admin, "declare", check=True)
        self.processes = {}

    def at(self, who, p):
        return f"amqp://{self.users[who]}@127.0.0.1/{self.vhosts[p]}"

    def configure(self, component, name, **options):
        (self.config / component).mkdir(exist_ok=True)
        (self.config / component / f"{name}.conf").write_text(conf(**options))
        self.pump.command(component, "declare", name, check=True)

    def relay(self, name, p, reader, exchange, broker=None):
        """Pump p's relay `name`: `reader` reads `exchange` on `broker` (else on p) and
        announces on p's xpublic from p's tree."""
        tree = self.pump.base / f"tree{p}"
        self.configure("sara", name, broker=broker or self.at(reader, p), exchange=exchange,
                       post_broker=self.at(reader, p), allowed_schemes="http file", post_exchange="xpublic",
                       post_base_url=f"file://{tree}/", directory=tree, **self.shared(p))

    def router(self, p, feeder, trusted=()):
        """Pump p's log router, run as its `feeder`, taking forwarded log messages from `trusted`."""
        more = {"report_feeders": " ".join(self.users[who] for who in trusted)} if trusted else {}
        self.configure("shovel", p, broker=self.at(feeder, p), exchange="xreport", topic_prefix="v02.log",
                       route_logs="on", post_broker=self.at(feeder, p), **more, **self.shared(p))

    def wire(self, relays, routers, subscriber="C"):
        """Relays {name: (pump, reader, exchange, the pump it reads or None: its own)}, routers
        {pump: (feeder, users it trusts to forward)}, and Bob subscribing on `subscriber`."""
        for name, (p, reader, exchange, upstream) in relays.items():
            self.relay(name, p, reader, exchange, broker=self.at(reader, upstream) if upstream else None)
        for p, (feeder, trusted) in routers.items():
            self.router(p, feeder, trusted)
        self.configure("subscribe", "bob", broker=self.at("bob", subscriber), allowed_schemes="file",
                       directory=self.pump.dst)

    def shared(self, p):
        return {"cluster": p, "log_index": self.pump.base / f"index{p}.sqlite"}

    def start_all(self):
        for component in ("shovel", "sara", "sender", "subscribe"):
            for conf_file in sorted((self.config / component).glob("*.conf")):
                self.processes[component, conf_file.stem] = start(self.pump, component, conf_file.stem)

    def post(self, who, p, name, content):
        path = self.pump.src / name
        path.write_text(content)
        self.pump.command("post", f"--post_broker={self.at(who, p)}", f"--post_base_url={self.pump.base_url}",
                          f"--post_base_dir={self.pump.src}", path, check=True)

    def log_of(self, who, p, key=lambda r: (r.user, r.rel_path)):
        """A source's dd_log, read as it goes: every log message it was sent so far."""
        seen = []
        # A queue of its own: dd_log keeps one queue name per account, chosen anew for each user.
        command = ("log", f"--broker={self.at(who, p)}", f"--queue=q_{self.users[who]}.log.test", "--json")
        self.pump.command(*command, check=True)         # its queue, from now on

        def read():
            seen.extend(report.decode(line.encode())
                        for line in self.pump.command(*command, check=True).stdout.splitlines())
            return {key(r) for r in seen}
        return read

    def stop(self):
        logs = {key: stop(self.pump, process) for key, process in self.processes.items()}
        assert not any("Traceback" in text for text in logs.values()), logs
        return logs


@pytest.fixture
def pumps(pump, vhost):
    made = []

    def make(declared):
        made.append(Pumps(pump, declared))
        return made[-1]
    yield make
    for each in made:
        for name in each.vhosts.values():
            api("DELETE", f"vhosts/{name}")
        for name in each.users.values():
            api("DELETE", f"users/{name}")


def test_in_a_v_each_source_reads_the_log_messages_of_its_own_files_only(pump, pumps):
    # Ann posts on A, Carl on B; C reads both with its feeder pc; Bob subscribes on C.
    net = pumps({"A": ["source ann", "feeder pa", "feeder pc"], "B": ["source carl", "feeder pb", "feeder pc"],
                 "C": ["subscriber bob", "feeder pc"]})
    u = net.users
    net.wire({"A": ("A", "pa", f"xs_{u['ann']}", None), "B": ("B", "pb", f"xs_{u['carl']}", None),
              "CfromA": ("C", "pc", "xpublic", "A"), "CfromB": ("C", "pc", "xpublic", "B")},
             {"A": ("pa", ["pc"]), "B": ("pb", ["pc"]), "C": ("pc", [])})
    ann_reads, carl_reads = net.log_of("ann", "A"), net.log_of("carl", "B")
    net.start_all()
    net.post("ann", "A", "from_ann.txt", "ann's")
    net.post("carl", "B", "from_carl.txt", "carl's")
    anns, carls = f"{u['ann']}/from_ann.txt", f"{u['carl']}/from_carl.txt"
    assert wait_for(lambda: (pump.dst / anns).exists() and (pump.dst / carls).exists(), timeout=60), \
        logs_so_far(net.processes)
    # Each source: its pump's relay, C's relay (through its own pump's router) and Bob.
    ann_expects = {(u["pa"], "from_ann.txt"), (u["pc"], anns), (u["bob"], anns)}
    carl_expects = {(u["pb"], "from_carl.txt"), (u["pc"], carls), (u["bob"], carls)}
    assert wait_for(lambda: ann_reads() >= ann_expects and carl_reads() >= carl_expects, timeout=30,
                    interval=0.5), (ann_reads(), carl_reads(), logs_so_far(net.processes))
    logs = net.stop()
    assert ann_reads() == ann_expects and carl_reads() == carl_expects
    # C's router sent Bob's log messages each to the pump its notice came from, and nothing was refused.
    router_c = logs["shovel", "C"]
    assert f"sent upstream toward A, to {net.at('pc', 'A')}" in router_c
    assert f"sent upstream toward B, to {net.at('pc', 'B')}" in router_c
    assert not any("[forged-log]" in text or "[no-route]" in text for text in logs.values())


def test_in_a_chain_log_messages_climb_back_through_every_pump(pump, pumps):
    # Ann posts on A; B reads A with its feeder pb, C reads B with pc; Bob subscribes on C.
    net = pumps({"A": ["source ann", "feeder pa", "feeder pb"], "B": ["feeder pb", "feeder pc"],
                 "C": ["subscriber bob", "feeder pc"]})
    u = net.users
    net.wire({"A": ("A", "pa", f"xs_{u['ann']}", None), "B": ("B", "pb", "xpublic", "A"),
              "C": ("C", "pc", "xpublic", "B")},
             {"A": ("pa", ["pb"]), "B": ("pb", ["pc"]), "C": ("pc", [])})
    ann_reads = net.log_of("ann", "A")
    net.start_all()
    net.post("ann", "A", "far.txt", "from A")
    far = f"{u['ann']}/far.txt"
    assert wait_for(lambda: (pump.dst / far).exists(), timeout=60), logs_so_far(net.processes)
    expects = {(u["pa"], "far.txt"), (u["pb"], far), (u["pc"], far), (u["bob"], far)}
    # A string, not a tuple: pytest would cut the middle of the logs out of a tuple's repr.
    assert wait_for(lambda: ann_reads() >= expects, timeout=60, interval=0.5), \
        f"ann read {sorted(ann_reads())}\n{logs_so_far(net.processes)}"
    logs = net.stop()
    assert ann_reads() == expects
    # Bob's: C → B → A, each router checking it against its own log index.
    assert f"log message from {u['bob']} sent upstream toward A, to {net.at('pc', 'B')}" in logs["shovel", "C"]
    assert f"log message from {u['bob']} sent upstream toward A, to {net.at('pb', 'A')}" in logs["shovel", "B"]
    assert f"log message from {u['bob']} routed to xr_{u['ann']}" in logs["shovel", "A"]
    assert not any("[forged-log]" in text or "[no-route]" in text for text in logs.values())


@pytest.mark.parametrize("push", ["file", "sftp"])
def test_a_chain_by_push_brings_every_file_and_its_log_messages_back(pump, pumps, push, request):
    # Ann posts on A; A's sender, as pb (a feeder of both pumps), pushes A's files into B's
    # incoming directory (a directory here, or over SFTP) and announces them on B in xs_pb;
    # B's relay reads xs_pb, knowing they come from A (report_upstream); Bob subscribes on B.
    net = pumps({"A": ["source ann", "feeder pa", "feeder pb"], "B": ["subscriber bob", "feeder pb"]})
    u = net.users
    tree_b = pump.base / "treeB"
    if push == "sftp":
        sshd = request.getfixturevalue("sshd_server")
        incoming = sshd.root / pump.base.name / "incomingB"
        destination = {"destination": f"{sshd.url}/{urllib.parse.quote(pump.base.name)}/incomingB",
                       "known_hosts": sshd.known_hosts, "sftp_key": sshd.key_file}
    else:
        incoming = pump.base / "incomingB"
        destination = {"destination": f"file://{incoming}"}
    net.wire({"A": ("A", "pa", f"xs_{u['ann']}", None)}, {"A": ("pa", ["pb"]), "B": ("pb", [])}, subscriber="B")
    net.configure("sender", "toB", broker=net.at("pb", "A"), exchange="xpublic", allowed_schemes="file",
                  **destination, post_broker=net.at("pb", "B"), post_exchange=f"xs_{u['pb']}",
                  post_base_url=f"file://{incoming}/", **net.shared("A"))
    net.configure("sara", "fromA", broker=net.at("pb", "B"), exchange=f"xs_{u['pb']}",
                  report_upstream=net.at("pb", "A"), allowed_schemes="file", post_broker=net.at("pb", "B"),
                  post_exchange="xpublic", post_base_url=f"file://{tree_b}/", directory=tree_b, **net.shared("B"))
    ann_reads = net.log_of("ann", "A", key=lambda r: (r.user, r.component, r.rel_path))
    net.start_all()
    files = {f"push{n}.txt": f"pushed {n} " * (n + 1) for n in range(3)}
    for name, content in files.items():
        net.post("ann", "A", name, content)
    mirror = {f"{u['ann']}/{name}": content for name, content in files.items()}
    assert wait_for(lambda: all((pump.dst / rel).exists() for rel in mirror), timeout=60), \
        logs_so_far(net.processes)
    assert {rel: (pump.dst / rel).read_text() for rel in mirror} == mirror
    # A's relay, A's sender, B's relay (forwarded by B's router) and Bob on B.
    expects = {(u["pa"], "sara", name) for name in files} | {
        (who, component, rel) for rel in mirror
        for who, component in ((u["pb"], "sender"), (u["pb"], "sara"), (u["bob"], "subscribe"))}
    # A string, not a tuple: pytest would cut the middle of the logs out of a tuple's repr.
    assert wait_for(lambda: ann_reads() >= expects, timeout=60, interval=0.5), \
        f"ann read {sorted(ann_reads())}\n{logs_so_far(net.processes)}"
    # The feeder can forward, not make up: a notice in ann's name that A never announced
    # reaches Bob (B trusts its feeder with data), but A refuses every log message about it.
    made_up = pump.base / "made_up" / u["ann"] / "made_up.txt"
    made_up.parent.mkdir(parents=True)
    made_up.write_text("not ann's")
    net.pump.command("post", f"--post_broker={net.at('pb', 'B')}", f"--post_exchange=xs_{u['pb']}",
                     f"--post_base_url=file://{made_up.parent.parent}/", f"--post_base_dir={made_up.parent.parent}",
                     f"--source={u['ann']}",
                     made_up, check=True)
    refused = f"refused log message from {u['bob']} about '{u['ann']}/made_up.txt'"
    assert wait_for(lambda: refused in net.processes["shovel", "A"].log.read_text(), timeout=30), \
        logs_so_far(net.processes)
    logs = net.stop()
    assert ann_reads() == expects
    assert (pump.dst / u["ann"] / "made_up.txt").exists()
    for rel in mirror:
        assert (tree_b / rel).read_text() == mirror[rel]
    assert f"log message from {u['bob']} sent upstream toward A, to {net.at('pb', 'A')}" in logs["shovel", "B"]
    assert f"log message from {u['bob']} routed to xr_{u['ann']}" in logs["shovel", "A"]
    forged = [line for text in logs.values() for line in text.splitlines() if "[forged-log]" in line]
    assert forged and all("made_up.txt" in line for line in forged), forged
    assert all("[forged-log]" not in text for key, text in logs.items() if key != ("shovel", "A"))
    assert not any("[no-route]" in text for text in logs.values())


SUM = Checksum("sha512", "ab" * 64)


def routed(index, made, *, cluster="B", fallback=None):
    """Where a router on `cluster` sends `made`: (the item's outcome's rule, its destination)."""
    router = shovel._Router(None, cluster, index, None, fallback=fallback,
                            here=lambda upstream: "pump-b" in upstream.broker)
    item = Item(made)
    router.route(item)
    return item.outcome.rule, item.destination


def log_message(rel_path, from_cluster, user="bob"):
    notice = Notice(pubtime=now(), base_url="file:///tree/", rel_path=rel_path, source="ann", checksum=SUM,
                    from_cluster=from_cluster)
    return report.of(notice, code=201, message="delivered", rule="", host="h", user=user, component="subscribe",
                     duration=0.1, nbytes=1, pubtime=now())


def test_the_learned_route_wins_and_report_upstream_serves_entries_that_name_none(tmp_path):
    index = logindex.Index(tmp_path / "index.sqlite", window=3600, limit=100)
    learned, configured = logindex.Upstream("amqp://pb@pump-a/", "xs_pb"), logindex.Upstream("amqp://pb@up/", "x")
    index.record([logindex.Entry("ann/learned.txt", "ann", SUM, None, learned),
                  logindex.Entry("ann/old.txt", "ann", SUM, None),
                  logindex.Entry("ann/loop.txt", "ann", SUM, None, logindex.Upstream("amqp://pb@pump-b/", "x"))])
    assert routed(index, log_message("ann/learned.txt", "A"), fallback=configured) == \
        ("", shovel._Destination("xs_pb", learned))
    # Whatever cluster the consumer says the notice came from.
    assert routed(index, log_message("ann/learned.txt", "B"))[1] == shovel._Destination("xs_pb", learned)
    # Recorded before relays named upstreams: report_upstream, if set.
    assert routed(index, log_message("ann/old.txt", "A"), fallback=configured) == \
        ("", shovel._Destination("x", configured))
    assert routed(index, log_message("ann/old.txt", "A")) == ("no-route", None)
    # An upstream that is this very pump is no upstream.
    assert routed(index, log_message("ann/loop.txt", "A")) == ("no-route", None)
    index.close()
