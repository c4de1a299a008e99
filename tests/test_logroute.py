"""Log messages routed back to their source on one pump: ann posts, the pump's relay
(dd_sara) ingests and announces her file, bob downloads it, the pump's router (dd_shovel
route_logs) copies the relay's and bob's log messages to xr_ann, and ann reads them with
dd_log.  Forged log messages stay out of ann's log: one naming another consumer, one
about a file the pump never announced, a non-reader's delivery of private data, one
past the log index's window; and other users cannot read ann's log.  Deletions the pump's
retention announces come back to the pump, and log messages travel back up from pump to
pump, each router checking them against its own log index."""
import hashlib
import secrets
import subprocess
import sys
import time

import amqp
import pytest

from dd.core import report
from dd.store import metrics
from dd.core.notice import Checksum, Notice, now
from tests.support.pump import wait_for
from tests.test_audit import Site


@pytest.fixture
def site(tmp_path, vhost):
    the_site = Site(tmp_path)
    status, out = the_site.audit("declare")
    assert status == 0, out
    yield the_site
    the_site.close()


def url(site, who):
    return f"amqp://{site.names[who]}@127.0.0.1/{site.vhost}"


def start(pump, component, name):
    """A configuration in the foreground, logging to a file the test can read meanwhile."""
    log = pump.base / f"{component}-{name}.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dd.cli.main", component, "foreground", name],
                                   env=pump.env, stdout=subprocess.DEVNULL, stderr=out)
    process.log = log
    pump.processes.append(process)
    return process


def logs_so_far(processes):
    """What each running component has logged, for a failure's report."""
    return "\n".join(f"--- {' '.join(key)}:\n{process.log.read_text()[-3000:]}"
                     for key, process in processes.items())


def stop(pump, process):
    pump.stop(process)
    return process.log.read_text()


class Routed:
    """The site's pump at work: its relay reads ann's exchange and announces on xpublic from
    its tree, its log router routes, bob subscribes; ann's log queue is declared first."""

    def __init__(self, pump, site, options="", relay_options=""):
        self.pump, self.site = pump, site
        pump.env["DD_CONFIG_DIR"] = str(site.config_dir)
        config, tree = site.config_dir, pump.base / "tree"
        (config / "default.conf").write_text(options)
        feeder = url(site, "pump")
        for component, name, text in (
                ("shovel", "logs", conf(broker=feeder, exchange="xreport", topic_prefix="v02.log", route_logs="on",
                                        post_broker=feeder)),
                ("sara", "ingest", conf(broker=feeder, exchange=f"xs_{site.names['ann']}",
                                        allowed_schemes="http file", post_broker=feeder, post_exchange="xpublic",
                                        post_base_url=f"file://{tree}/", directory=tree) + relay_options),
                ("subscribe", "bob", conf(broker=url(site, "bob"), allowed_schemes="file", directory=pump.dst))):
            (config / component).mkdir(exist_ok=True)
            (config / component / f"{name}.conf").write_text(text)
            pump.command(component, "declare", name, check=True)
        pump.command("log", f"--broker={url(site, 'ann')}", check=True)       # ann's queue, from now on
        self.router = start(pump, "shovel", "logs")
        self.relay = start(pump, "sara", "ingest")
        self.subscriber = start(pump, "subscribe", "bob")
        self.seen = []          # what ann's dd_log showed so far

    def post(self, rel_path, content, *options):
        path = self.pump.src / rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        self.pump.command("post", f"--post_broker={url(self.site, 'ann')}", f"--post_base_url={self.pump.base_url}",
                          f"--post_base_dir={self.pump.src}", *options, path, check=True)

    def ann_reads(self):
        """Every log message ann has been sent so far."""
        out = self.pump.command("log", f"--broker={url(self.site, 'ann')}", "--json", check=True).stdout
        self.seen.extend(report.decode(line.encode()) for line in out.splitlines())
        return self.seen

    def relayed(self, rel_path):
        """The path the pump announces for ann's `rel_path`: below her part of its tree."""
        return f"{self.site.names['ann']}/{rel_path}"

    def wait_for_reports(self, *reports):
        """Until ann has a log message from each (consumer, relative path) of `reports`."""
        return wait_for(lambda: {(r.user, r.rel_path) for r in self.ann_reads()} >= set(reports),
                        timeout=30, interval=0.5)

    def router_log(self):
        return self.router.log.read_text()

    def stop(self):
        """Stop every process; return the router's log and its counters as it recorded them."""
        logs = {name: stop(self.pump, p) for name, p in (("router", self.router), ("relay", self.relay),
                                                         ("subscriber", self.subscriber))}
        assert not any("Traceback" in text for text in logs.values()), logs
        return logs["router"], metrics.read(self.pump.base / "state" / "shovel" / "logs" / "i001.json")


def conf(**options):
    """A configuration file's text."""
    return "".join(f"{name} {value}\n" for name, value in options.items())


def publish(connection, user, made):
    """A log message published by `user` on its own exchange, under its own name (the
    broker checks user_id), as any user of the pump can."""
    body, _ = report.encode(made)
    with connection:
        connection.channel().basic_publish_confirm(
            amqp.Message(body, user_id=user, content_type=report.CONTENT_TYPE), exchange=f"xs_{user}",
            routing_key=made.topic)


def delivered(consumer, source, rel_path, content, code=201):
    """The log message `consumer` publishes when it has delivered `content` posted by `source`."""
    notice = Notice(pubtime=now(), base_url="file:///tree/", rel_path=rel_path, source=source,
                    checksum=_sha512(content))
    return report.of(notice, code=code, message="delivered" if code == 201 else "refused", rule="", host="h",
                     user=consumer, component="subscribe", duration=0.1, nbytes=len(content), pubtime=now())


def _sha512(content):
    return Checksum("sha512", hashlib.sha512(content.encode()).hexdigest())


def test_genuine_deliveries_reach_their_source_and_forged_ones_nobody(pump, site):
    n = site.names
    routed = Routed(pump, site)
    routed.post("obs/a.txt", "for bob")
    a = routed.relayed("obs/a.txt")
    assert wait_for(lambda: (pump.dst / a).exists())
    # Eve names bob as the consumer, but the broker says she published it.
    publish(site.connect("eve"), n["eve"], delivered(n["bob"], n["ann"], a, "for bob"))
    # Eve, under her own name, about a file this pump never announced.
    never = routed.relayed("obs/never.txt")
    publish(site.connect("eve"), n["eve"], delivered(n["eve"], n["ann"], never, "made up"))
    # The relay's own log message (about ann's notice, which it ingested) and bob's reach ann.
    assert routed.wait_for_reports((n["pump"], "obs/a.txt"), (n["bob"], a))
    assert wait_for(lambda: routed.router_log().count("[forged-log]") == 2)
    router_log, counters = routed.stop()
    reports = routed.ann_reads()
    assert sorted((r.rel_path, r.code, r.user, r.source) for r in reports) == sorted(
        [("obs/a.txt", 201, n["pump"], n["ann"]), (a, 201, n["bob"], n["ann"])])
    forged = [line for line in router_log.splitlines() if "[forged-log]" in line]
    assert "names consumer" in forged[0] + forged[1] and repr(never) in forged[0] + forged[1]
    assert any(f"from {n['eve']} about {never!r}" in line and "relayed no such notice" in line
               for line in forged)
    assert counters["rejected"] == 2 and counters["delivered"] == 2
    # Nobody but ann reads xr_ann.
    eve_reads = pump.command("log", f"--broker={url(site, 'eve')}", f"--exchange=xr_{n['ann']}")
    assert eve_reads.returncode == 4 and "may not read exchange" in eve_reads.stderr


def test_only_the_readers_of_private_data_may_report_on_it(pump, site):
    n = site.names
    routed = Routed(pump, site)
    routed.post("obs/secret.txt", "for bob only", f"--readers={n['bob']}")
    secret = routed.relayed("obs/secret.txt")
    assert wait_for(lambda: (pump.dst / secret).exists())
    # The relay is no reader: its log message routes because it ingested the notice itself.
    assert routed.wait_for_reports((n["pump"], "obs/secret.txt"), (n["bob"], secret))
    # Eve is no reader: whatever she says about the file, she cannot have been sent it.
    for code in (201, 403):
        publish(site.connect("eve"), n["eve"], delivered(n["eve"], n["ann"], secret, "for bob only", code))
    assert wait_for(lambda: routed.router_log().count("[forged-log]") == 2)
    router_log, counters = routed.stop()
    reports = routed.ann_reads()
    assert sorted((r.user, r.code) for r in reports) == sorted([(n["pump"], 201), (n["bob"], 201)])
    assert router_log.count(f"refused log message from {n['eve']} about {secret!r}") == 2
    assert counters["rejected"] == 2


def test_a_log_message_about_a_notice_announced_longer_ago_than_the_window_is_refused(pump, site):
    n = site.names
    window = 8.0
    routed = Routed(pump, site, f"log_index_window {window:g}s\n")
    routed.post("obs/a.txt", "for bob")
    a = routed.relayed("obs/a.txt")
    bobs = f"log message from {n['bob']} routed"
    assert wait_for(lambda: bobs in routed.router_log())
    announced_before = time.monotonic()
    # Bob's log message again, within the window: routed like the first.
    publish(site.connect("bob"), n["bob"], delivered(n["bob"], n["ann"], a, "for bob"))
    assert wait_for(lambda: routed.router_log().count(bobs) == 2)
    time.sleep(max(announced_before + window + 0.5 - time.monotonic(), 0))
    # And once more, past the window: the same message is now refused.
    publish(site.connect("bob"), n["bob"], delivered(n["bob"], n["ann"], a, "for bob"))
    assert wait_for(lambda: "[forged-log]" in routed.router_log())
    router_log, counters = routed.stop()
    assert [r.rel_path for r in routed.ann_reads() if r.user == n["bob"]] == [a] * 2
    assert f"refused log message from {n['bob']} about {a!r}" in router_log
    assert counters["rejected"] == 1


def test_deletions_announced_by_retention_are_reported_back_to_the_pump(pump, site):
    n = site.names
    routed = Routed(pump, site, relay_options="retention 4s\nretention_announce on\n")
    routed.post("obs/a.txt", "for bob")
    a = pump.dst / routed.relayed("obs/a.txt")
    assert wait_for(a.exists)
    # The pump deletes its copy and announces it; bob deletes his and reports it to the
    # source of the delete notice: the pump's own user.
    assert wait_for(lambda: not a.exists(), timeout=30)
    routed_to_pump = f"log message from {n['bob']} routed to xr_{n['pump']}"
    assert wait_for(lambda: routed_to_pump in routed.router_log())
    router_log, counters = routed.stop()
    assert "[forged-log]" not in router_log and counters["rejected"] == 0


@pytest.fixture
def two_pumps(pump, vhost):
    """Pumps A and B: two vhosts, each set up by dd_audit; B's feeder is also a feeder on A,
    the link that carries data down from A and log messages back up."""
    from tests.test_audit import api
    tag = secrets.token_hex(3)
    users = {who: f"t{tag}{who}" for who in ("ann", "bob", "pa", "pb")}
    passwords = {name: secrets.token_hex(8) for name in users.values()}
    vhosts = {"A": f"dd-a-{tag}", "B": f"dd-b-{tag}"}
    config = pump.base / "config"
    config.mkdir(exist_ok=True)
    credentials = config / "credentials.conf"
    credentials.write_text("amqp://guest:guest@127.0.0.1/\n" + "".join(
        f"amqp://{name}:{password}@127.0.0.1/\n" for name, password in passwords.items()))
    credentials.chmod(0o600)
    declared = {"A": ["source ann", "feeder pa", "feeder pb"], "B": ["subscriber bob", "feeder pb"]}
    for pump_name, lines in declared.items():
        admin = config / f"admin{pump_name}.conf"
        admin.write_text(f"admin amqp://guest@127.0.0.1/{vhosts[pump_name]}\n" + "".join(
            f"declare {line.split()[0]} {users[line.split()[1]]}\n" for line in lines))
        pump.command("audit", "--config", admin, "declare", check=True)
    yield users, passwords, vhosts
    for name in vhosts.values():
        api("DELETE", f"vhosts/{name}")
    for name in users.values():
        api("DELETE", f"users/{name}")


def test_a_log_message_travels_back_upstream_to_the_pump_where_its_source_posted(pump, two_pumps):
    users, passwords, vhosts = two_pumps
    at = {(who, p): f"amqp://{users[who]}@127.0.0.1/{vhosts[p]}" for who in users for p in vhosts}
    config = pump.base / "config"
    # Each pump has its relay, its router and a log index of its own.  A's relay ingests
    # ann's exchange, B's relay reads A's xpublic, and bob subscribes on B.
    relays = {"A": {"broker": at["pa", "A"], "exchange": f"xs_{users['ann']}", "post_broker": at["pa", "A"]},
              "B": {"broker": at["pb", "A"], "exchange": "xpublic", "post_broker": at["pb", "B"]}}
    routers = {"A": {"post_broker": at["pa", "A"], "report_feeders": users["pb"]},
               "B": {"post_broker": at["pb", "B"], "report_upstream": at["pb", "A"]}}
    for p in "AB":
        tree, shared = pump.base / f"tree{p}", {"cluster": p, "log_index": pump.base / f"index{p}.sqlite"}
        for component, text in (
                ("sara", conf(**relays[p], allowed_schemes="http file", post_exchange="xpublic",
                              post_base_url=f"file://{tree}/", directory=tree, **shared)),
                ("shovel", conf(broker=relays[p]["post_broker"], exchange="xreport", topic_prefix="v02.log",
                                route_logs="on", **routers[p], **shared))):
            (config / component).mkdir(exist_ok=True)
            (config / component / f"{p}.conf").write_text(text)
            pump.command(component, "declare", p, check=True)
    (config / "subscribe").mkdir()
    (config / "subscribe" / "bob.conf").write_text(conf(broker=at["bob", "B"], allowed_schemes="file",
                                                        directory=pump.dst))
    pump.command("subscribe", "declare", "bob", check=True)
    ann_log = ("log", f"--broker={at['ann', 'A']}", "--json")
    pump.command(*ann_log, check=True)
    processes = {(component, p): start(pump, component, p) for p in "AB" for component in ("sara", "shovel")}
    processes["subscribe", "bob"] = start(pump, "subscribe", "bob")
    (pump.src / "up.txt").write_text("from A")
    pump.command("post", f"--post_broker={at['ann', 'A']}", f"--post_base_url={pump.base_url}",
                 f"--post_base_dir={pump.src}", pump.src / "up.txt", check=True)
    # Both pumps keep it below ann's part of their trees.
    up = f"{users['ann']}/up.txt"
    assert wait_for(lambda: (pump.dst / up).exists(), timeout=60), logs_so_far(processes)
    # B's feeder is trusted to forward its users' log messages, not to make them up.
    never = f"{users['ann']}/never.txt"
    publish(amqp.Connection("127.0.0.1:5672", userid=users["pb"], password=passwords[users["pb"]],
                            virtual_host=vhosts["A"]),
            users["pb"], delivered(users["bob"], users["ann"], never, "made up"))
    seen = []

    def ann_reads():
        seen.extend(report.decode(line.encode()) for line in pump.command(*ann_log, check=True).stdout.splitlines())
        return {r.user for r in seen}

    assert wait_for(lambda: ann_reads() >= {users["pa"], users["pb"], users["bob"]}, timeout=30, interval=0.5), \
        logs_so_far(processes)
    assert wait_for(lambda: "[forged-log]" in processes["shovel", "A"].log.read_text())
    logs = {key: stop(pump, process) for key, process in processes.items()}
    ann_reads()
    # The relays' log messages and bob's, and nothing made up.
    assert sorted((r.user, r.rel_path, r.code, r.from_cluster) for r in seen) == sorted(
        [(users["pa"], "up.txt", 201, "A"), (users["pb"], up, 201, "A"), (users["bob"], up, 201, "A")])
    assert "sent upstream toward A" in logs["shovel", "B"]
    assert f"log message from {users['bob']} routed to xr_{users['ann']}" in logs["shovel", "A"]
    assert f"refused log message from {users['bob']} about {never!r}" in logs["shovel", "A"]
    assert not any("Traceback" in text for text in logs.values())
