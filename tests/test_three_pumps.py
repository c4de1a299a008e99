"""Three pumps A → B → C on one RabbitMQ: three vhosts set up by dd_audit, three data
servers, three clusters.  Alice posts on A for cluster C; Bob subscribes on C; Eve is a
user of B.  Data goes down the route and no further, log messages come back up to Alice
and to nobody else, and private data reaches its reader only."""
import secrets
import subprocess
import sys

import pytest

from dd.core import report
from tests.support.pump import compare, manifest, reachable_by_workers, wait_for
from tests.support.servers import free_port
from tests.test_audit import api

FILES = 200


class Actor:
    """Somebody with a configuration directory, state and credentials of their own."""

    def __init__(self, base, name, credentials):
        self.dir = base / name
        self.config = self.dir / "config"
        self.config.mkdir(parents=True)
        (self.config / "credentials.conf").write_text("".join(line + "\n" for line in credentials))
        (self.config / "credentials.conf").chmod(0o600)
        self.env = None
        self.processes = []

    def conf(self, component, name, text):
        path = self.config / component / f"{name}.conf"
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)

    def run(self, component, *args, check=True):
        result = subprocess.run([sys.executable, "-m", "dd.cli.main", component, *map(str, args)],
                                env=self.env, capture_output=True, text=True, timeout=120)
        assert not check or result.returncode == 0, result.stderr
        return result

    def start(self, component, name):
        log = self.dir / f"{component}-{name}.log"
        with open(log, "w") as out:     # a file, not a pipe: nobody reads until the end
            process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", component, "foreground", name],
                                       env=self.env, stdout=subprocess.DEVNULL, stderr=out)
        process.log = log
        self.processes.append(process)
        return process

    def stop(self):
        for process in self.processes:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return "\n".join(process.log.read_text() for process in self.processes)


@pytest.fixture
def network(tmp_path, pump, vhost):  # pump: alice's own web server (nginx) and tree
    reachable_by_workers(tmp_path)     # the data servers' workers run as www-data
    tag = secrets.token_hex(3)
    users = {u: f"t{tag}{u}" for u in ("alice", "bob", "eve", "fa", "fb", "fc")}
    passwords = {u: secrets.token_hex(8) for u in users.values()}
    data_passwords = {u: secrets.token_hex(8) for u in users.values()}   # the data servers' own
    vhosts = {p: f"dd-{p.lower()}-{tag}" for p in "ABC"}
    ports = {p: free_port() for p in "ABC"}

    def amqp(who):
        return f"amqp://{users[who]}:{passwords[users[who]]}@127.0.0.1/"

    def http(who, pump_name):
        return f"http://{users[who]}:{data_passwords[users[who]]}@127.0.0.1:{ports[pump_name]}/"

    guest = "amqp://guest:guest@127.0.0.1/"
    actors = {
        # Each pump's administrator knows its users' passwords, and its data server's readers'.
        "A": [guest, amqp("alice"), amqp("fa"), amqp("fb"), http("fb", "A")],
        "B": [guest, amqp("fb"), amqp("fc"), amqp("eve"), http("fb", "A"), http("fc", "B"), http("eve", "B")],
        "C": [guest, amqp("fc"), amqp("bob"), http("fc", "B"), http("bob", "C")],
        "alice": [amqp("alice")], "bob": [amqp("bob"), http("bob", "C")], "eve": [amqp("eve"), http("eve", "B")],
    }
    actors = {name: Actor(tmp_path, name, lines) for name, lines in actors.items()}
    for actor in actors.values():
        actor.env = dict(pump.env, DD_CONFIG_DIR=str(actor.config), DD_STATE_DIR=str(actor.dir / "state"),
                         DD_LOG_DIR=str(actor.dir / "logs"))
    declared = {"A": ["source alice", "feeder fa", "feeder fb"], "B": ["subscriber eve", "feeder fb", "feeder fc"],
                "C": ["subscriber bob", "feeder fc"]}
    for p, lines in declared.items():
        actors[p].conf("", "admin", f"admin amqp://guest@127.0.0.1/{vhosts[p]}\n" + "".join(
            f"declare {line.split()[0]} {users[line.split()[1]]}\n" for line in lines))
    yield dict(users=users, vhosts=vhosts, ports=ports, actors=actors)
    for actor in actors.values():
        for process in actor.processes:
            if process.poll() is None:
                process.kill()
                process.wait()
        if (actor.config / "sara" / "link.conf").exists():
            actor.run("sara", "stop", "link", check=False)    # its data server, if it outlived its relay
    for name in vhosts.values():
        api("DELETE", f"vhosts/{name}")
    for name in users.values():
        api("DELETE", f"users/{name}")


def test_data_goes_down_the_route_and_log_messages_come_back_to_their_source_only(pump, network):
    users, vhosts, ports, actors = (network[k] for k in ("users", "vhosts", "ports", "actors"))
    u = users

    def at(who, p):
        return f"amqp://{u[who]}@127.0.0.1/{vhosts[p]}"

    for p in "ABC":
        assert actors[p].run("audit", "declare").returncode == 0
        assert "0 change(s)" in actors[p].run("audit", "declare").stdout      # declare twice: a no-op
    # The relays: A ingests alice's exchange; B reads A; C reads B.  Each serves its tree.
    links = {"A": (at("fa", "A"), f"xs_{u['alice']}", "gateway_for B C\n", u["fb"]),
             "B": (at("fb", "A"), "xpublic", "gateway_for C\n", u["fc"]),
             "C": (at("fc", "B"), "xpublic", "", None)}
    for p, (source, exchange, gateways, relay_reader) in links.items():
        actors[p].conf("sara", "link", (
            f"broker {source}\nexchange {exchange}\npost_broker {at('f' + p.lower(), p)}\npost_exchange xpublic\n"
            f"post_base_url http://127.0.0.1:{ports[p]}/\ndata_server_port {ports[p]}\ncluster {p}\n{gateways}"
            + (f"relay_readers {relay_reader}\n" if relay_reader else "") + f"directory {actors[p].dir / 'tree'}\n"))
        # No router names its upstream: each learns it from its relay's records in the log index.
        upstream = {"B": f"report_feeders {u['fc']}\n", "C": "", "A": f"report_feeders {u['fb']}\n"}[p]
        actors[p].conf("shovel", "logs", (
            f"broker {at('f' + p.lower(), p)}\nexchange xreport\ntopic_prefix v02.log\nroute_logs on\n"
            f"post_broker {at('f' + p.lower(), p)}\ncluster {p}\n{upstream}"))
        actors[p].run("sara", "declare", "link")
        actors[p].run("shovel", "declare", "logs")
    actors["bob"].conf("subscribe", "c", f"broker {at('bob', 'C')}\ndirectory {actors['bob'].dir / 'mirror'}\n")
    actors["eve"].conf("subscribe", "b", f"broker {at('eve', 'B')}\ndirectory {actors['eve'].dir / 'mirror'}\n")
    actors["bob"].run("subscribe", "declare", "c")
    actors["eve"].run("subscribe", "declare", "b")
    for who, p in (("alice", "A"), ("eve", "B"), ("bob", "C")):
        actors[who].run("log", f"--broker={at(who, p)}")          # their log queues, from now on

    # Alice's files: 200 for C, one that stops at B, one for nowhere on this route, one private to Bob.
    for i in range(FILES):
        (pump.src / "obs" / f"d{i % 4}").mkdir(parents=True, exist_ok=True)
        (pump.src / "obs" / f"d{i % 4}" / f"f{i:03d}.dat").write_bytes(secrets.token_bytes(i * 37))
    for name in ("for_b.txt", "for_z.txt", "secret.txt"):
        (pump.src / name).write_text(name)
    expected = manifest(pump.src / "obs")
    alice = u["alice"]      # every pump keeps her files below her name

    def post(*paths, **options):
        args = [f"--post_broker={at('alice', 'A')}", f"--post_base_url={pump.base_url}",
                f"--post_base_dir={pump.src}", "--cluster=A"] + [f"--{k}={v}" for k, v in options.items()]
        actors["alice"].run("post", *args, *paths)

    for p in "ABC":
        actors[p].start("sara", "link")
        actors[p].start("shovel", "logs")
    actors["bob"].start("subscribe", "c")
    actors["eve"].start("subscribe", "b")
    post(pump.src / "obs", to_clusters="C")
    post(pump.src / "for_b.txt", to_clusters="B")
    post(pump.src / "for_z.txt", to_clusters="Z")
    post(pump.src / "secret.txt", to_clusters="C", readers=u["bob"])

    mirror = actors["bob"].dir / "mirror"
    arrived = wait_for(lambda: compare(expected, manifest(mirror / alice / "obs")) == ([], [], [])
                       and (mirror / alice / "secret.txt").exists(), timeout=120, interval=0.5)
    # Bob's log messages travel C → B → A: all of them within 30 s.
    alice_reads = []

    def bobs_reports():
        out = actors["alice"].run("log", f"--broker={at('alice', 'A')}", "--json").stdout
        alice_reads.extend(report.decode(line.encode()) for line in out.splitlines())
        return [r for r in alice_reads if r.user == u["bob"]]
    reported = wait_for(lambda: len(bobs_reports()) >= FILES + 1, timeout=30, interval=1)
    logs = {name: actor.stop() for name, actor in actors.items()}
    assert arrived, logs["bob"][-2000:]
    assert reported, (len(bobs_reports()), logs["C"][-2000:])

    # Down the route and no further.
    assert (mirror / alice / "secret.txt").read_text() == "secret.txt"
    assert not (mirror / alice / "for_b.txt").exists() and not (mirror / alice / "for_z.txt").exists()
    assert (actors["B"].dir / "tree" / alice / "for_b.txt").exists()
    assert not (actors["C"].dir / "tree" / alice / "for_b.txt").exists()
    assert not any((actors[p].dir / "tree" / alice / "for_z.txt").exists() for p in "ABC")
    for p in "ABC":     # private all the way, and nowhere public
        assert (actors[p].dir / "tree" / "private" / u["bob"] / alice / "secret.txt").exists()
        assert not (actors[p].dir / "tree" / alice / "secret.txt").exists()

    # Exactly one log message per delivery of Bob's, to Alice, and to nobody else.
    from_bob = [r for r in alice_reads if r.user == u["bob"]]
    assert sorted(r.rel_path for r in from_bob if r.code == 201) == sorted(
        [f"{alice}/obs/{path}" for path in expected] + [f"{alice}/secret.txt"])
    assert len(from_bob) == FILES + 1
    assert {r.source for r in alice_reads} == {u["alice"]}
    for who, p in (("eve", "B"), ("bob", "C")):
        assert actors[who].run("log", f"--broker={at(who, p)}").stdout.count("\n") == 1   # the header only

    # Eve, on B, was never even told of the private file: it is announced to its readers alone.
    assert not (actors["eve"].dir / "mirror" / alice / "secret.txt").exists()
    assert "secret.txt" not in logs["eve"] and "Traceback" not in logs["eve"] + logs["bob"]
    assert not any(r.user == u["eve"] and r.rel_path.endswith("secret.txt") for r in alice_reads)
