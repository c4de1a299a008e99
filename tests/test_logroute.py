"""Log messages routed back to their source on one pump: ann posts, bob downloads, the
pump's router (dd_shovel route_logs) copies bob's log message to xr_ann, and ann reads
it with dd_log; forged log messages and other users' logs stay out of reach."""
import json
import secrets
import subprocess
import sys

import amqp
import pytest

from dd import report
from tests.pump import wait_for
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


def test_each_delivery_is_reported_to_its_source_and_to_nobody_else(pump, site):
    pump.env["DD_CONFIG_DIR"] = str(site.config_dir)
    n = site.names
    config = site.config_dir
    (config / "shovel").mkdir()
    (config / "shovel" / "logs.conf").write_text(
        f"broker {url(site, 'pump')}\nexchange xreport\ntopic_prefix v02.log\nroute_logs on\n"
        f"post_broker {url(site, 'pump')}\n")
    router = subprocess.Popen([sys.executable, "-m", "dd.cli.main", "shovel", "foreground", "logs"],
                              env=pump.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pump.processes.append(router)
    ann_log = ("log", f"--broker={url(site, 'ann')}")
    assert pump.command(*ann_log, check=True).stdout.count("\n") == 1     # ann's queue, from now on

    (config / "subscribe").mkdir()
    (config / "subscribe" / "bob.conf").write_text(f"broker {url(site, 'bob')}\ndirectory {pump.dst}\n")
    pump.command("subscribe", "declare", "bob", check=True)
    # The pump announces ann's file on xpublic, as its ingest does; bob mirrors it.
    (pump.src / "obs").mkdir()
    (pump.src / "obs" / "a.txt").write_text("for bob")
    pump.command("post", f"--post_broker={url(site, 'pump')}", "--post_exchange=xpublic", f"--source={n['ann']}",
                 f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}", pump.src / "obs" / "a.txt",
                 check=True)
    subscriber = pump.foreground("bob")
    assert wait_for(lambda: (pump.dst / "obs" / "a.txt").exists())

    # eve forges a log message naming bob as the consumer: the router refuses it.
    forged = json.loads(report.encode(report.of(
        _notice(n["ann"]), code=201, message="delivered", rule="", host="h", user=n["bob"],
        component="subscribe", duration=0.1, nbytes=7, pubtime=_notice(n["ann"]).pubtime))[0])
    with site.connect("eve") as connection:
        connection.channel().basic_publish_confirm(
            amqp.Message(json.dumps(forged).encode(), user_id=n["eve"]), exchange=f"xs_{n['eve']}",
            routing_key="v02.log.obs")

    lines = []
    assert wait_for(lambda: lines.extend(pump.command(*ann_log, "--json", check=True).stdout.splitlines())
                    or lines, timeout=30, interval=0.5)
    pump.stop(subscriber)
    _, router_log = pump.stop(router)
    reports = [report.decode(line.encode()) for line in lines]
    assert [(r.rel_path, r.code, r.user, r.source) for r in reports] == [("obs/a.txt", 201, n["bob"], n["ann"])]
    assert "[forged-log]" in router_log and "Traceback" not in router_log
    # Nobody but ann reads xr_ann.
    eve_reads = pump.command("log", f"--broker={url(site, 'eve')}", f"--exchange=xr_{n['ann']}")
    assert eve_reads.returncode == 4 and "may not read exchange" in eve_reads.stderr


def _notice(source):
    from dd.notice import Notice, now
    return Notice(pubtime=now(), base_url="http://127.0.0.1/", rel_path="obs/a.txt", source=source)


@pytest.fixture
def two_pumps(pump, vhost):
    """Pumps A and B: two vhosts, each set up by dd_audit; B's feeder is also a feeder on A,
    the link that carries data down from A and log messages back up."""
    from tests.test_audit import api
    tag = secrets.token_hex(3)
    users = {who: f"t{tag}{who}" for who in ("ann", "bob", "pa", "pb")}
    vhosts = {"A": f"dd-a-{tag}", "B": f"dd-b-{tag}"}
    config = pump.base / "config"
    config.mkdir(exist_ok=True)
    credentials = config / "credentials.conf"
    credentials.write_text("amqp://guest:guest@127.0.0.1/\n" + "".join(
        f"amqp://{name}:{secrets.token_hex(8)}@127.0.0.1/\n" for name in users.values()))
    credentials.chmod(0o600)
    declared = {"A": ["source ann", "feeder pa", "feeder pb"], "B": ["subscriber bob", "feeder pb"]}
    for pump_name, lines in declared.items():
        admin = config / f"admin{pump_name}.conf"
        admin.write_text(f"admin amqp://guest@127.0.0.1/{vhosts[pump_name]}\n" + "".join(
            f"declare {line.split()[0]} {users[line.split()[1]]}\n" for line in lines))
        pump.command("audit", "--config", admin, "declare", check=True)
    yield users, vhosts
    for name in vhosts.values():
        api("DELETE", f"vhosts/{name}")
    for name in users.values():
        api("DELETE", f"users/{name}")


def test_a_log_message_travels_back_upstream_to_the_pump_where_its_source_posted(pump, two_pumps):
    users, vhosts = two_pumps
    at = {(who, p): f"amqp://{users[who]}@127.0.0.1/{vhosts[p]}" for who in users for p in vhosts}
    config = pump.base / "config"
    (config / "shovel").mkdir()
    (config / "shovel" / "a.conf").write_text(
        f"broker {at['pa', 'A']}\nexchange xreport\ntopic_prefix v02.log\nroute_logs on\ncluster A\n"
        f"post_broker {at['pa', 'A']}\nreport_feeders {users['pb']}\n")
    (config / "shovel" / "b.conf").write_text(
        f"broker {at['pb', 'B']}\nexchange xreport\ntopic_prefix v02.log\nroute_logs on\ncluster B\n"
        f"post_broker {at['pb', 'B']}\nreport_upstream {at['pb', 'A']}\n")
    routers = [subprocess.Popen([sys.executable, "-m", "dd.cli.main", "shovel", "foreground", name],
                                env=pump.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in ("a", "b")]
    pump.processes.extend(routers)
    ann_log = ("log", f"--broker={at['ann', 'A']}", "--json")
    pump.command(*ann_log, check=True)
    (config / "subscribe").mkdir()
    (config / "subscribe" / "bob.conf").write_text(f"broker {at['bob', 'B']}\ndirectory {pump.dst}\n")
    pump.command("subscribe", "declare", "bob", check=True)
    # What B's relay announces of ann's file, first posted on A.
    (pump.src / "up.txt").write_text("from A")
    pump.command("post", f"--post_broker={at['pb', 'B']}", "--post_exchange=xpublic", f"--source={users['ann']}",
                 "--cluster=A", f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}",
                 pump.src / "up.txt", check=True)
    subscriber = pump.foreground("bob")
    lines = []
    assert wait_for(lambda: lines.extend(pump.command(*ann_log, check=True).stdout.splitlines()) or lines,
                    timeout=30, interval=0.5)
    pump.stop(subscriber)
    logs = [pump.stop(router)[1] for router in routers]
    [seen] = [report.decode(line.encode()) for line in lines]
    assert (seen.rel_path, seen.code, seen.user, seen.from_cluster) == ("up.txt", 201, users["bob"], "A")
    assert "sent upstream toward A" in logs[1] and f"routed to xr_{users['ann']}" in logs[0]
