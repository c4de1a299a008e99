"""dd_audit against the real RabbitMQ management API: users, permissions, exchanges,
and what the broker then refuses to each user."""
import datetime
import io
import json
import secrets

import amqp
import amqp.exceptions
import pytest
import urllib3

from dd.admin.audit.cleanup import stale
from dd.cli.main import run
from dd.core.environment import Environment
from tests.support.pump import wait_for

API = "http://127.0.0.1:15672/api"
GUEST = urllib3.make_headers(basic_auth="guest:guest")
#: A pool of its own: urllib3.request() is 2.x only, and Debian 12 ships 1.26.
HTTP = urllib3.PoolManager()


def api(method, path, body=None):
    response = HTTP.request(method, f"{API}/{path}", headers={**GUEST, "Content-Type": "application/json"},
                               body=None if body is None else json.dumps(body))
    return json.loads(response.data) if response.data and response.status < 300 else response.status


class Site:
    """A pump of its own: a vhost and users no other test uses, removed afterwards."""

    def __init__(self, tmp_path):
        tag = secrets.token_hex(3)
        self.vhost = f"dd-audit-{tag}"
        self.names = {role: f"t{tag}{role}" for role in ("ann", "anne", "bob", "eve", "pump")}
        self.passwords = {name: secrets.token_hex(8) for name in self.names.values()}
        self.config_dir = tmp_path / "config"
        self.config_dir.mkdir()
        credentials = self.config_dir / "credentials.conf"
        credentials.write_text("amqp://guest:guest@127.0.0.1/\n" + "".join(
            f"amqp://{n}:{p}@127.0.0.1/\n" for n, p in self.passwords.items()))
        credentials.chmod(0o600)
        n = self.names
        self.write(f"admin amqp://guest@127.0.0.1/{self.vhost}\n"
                   f"declare source {n['ann']}\ndeclare source {n['anne']}\n"
                   f"declare subscriber {n['bob']}\ndeclare subscriber {n['eve']}\n"
                   f"declare feeder {n['pump']}\n")
        self.tmp_path = tmp_path
        self.other_vhosts = []      # another pump's, on the same broker

    def write(self, text):
        (self.config_dir / "admin.conf").write_text(text)

    def audit(self, *argv):
        env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), config_dir=self.config_dir,
                          state_dir=self.tmp_path / "state", log_dir=self.tmp_path / "log", environ={})
        status = run("audit", argv, env)
        return status, env.stdout.getvalue() + env.stderr.getvalue()

    def connect(self, who, vhost=None):
        name = self.names[who]
        connection = amqp.Connection("127.0.0.1:5672", userid=name, password=self.passwords[name],
                                     virtual_host=vhost or self.vhost)
        connection.connect()
        return connection

    def close(self):
        for vhost in (self.vhost, *self.other_vhosts):
            api("DELETE", f"vhosts/{vhost}")
        for name in self.names.values():
            api("DELETE", f"users/{name}")


@pytest.fixture
def site(tmp_path, vhost):  # vhost: skips when the broker is not there
    the_site = Site(tmp_path)
    yield the_site
    the_site.close()


def test_declare_sets_up_the_pump_and_a_second_run_changes_nothing(site):
    status, out = site.audit("declare")
    assert status == 0, out
    n = site.names
    assert api("GET", f"vhosts/{site.vhost}")["name"] == site.vhost
    exchanges = {e["name"]: e for e in api("GET", f"exchanges/{site.vhost}")}
    for name in ["xpublic"] + [f"x{k}_{u}" for u in n.values() for k in ("s", "r", "priv")]:
        assert exchanges[name]["type"] == "topic" and exchanges[name]["durable"], name
    ann = api("GET", f"permissions/{site.vhost}/{n['ann']}")
    assert ann["configure"] == rf"^(q_{n['ann']}\..*|xs_{n['ann']})$"
    assert api("GET", f"users/{n['pump']}")["tags"] in ([], "")
    before = {u: api("GET", f"users/{u}")["password_hash"] for u in n.values()}

    status, out = site.audit("declare")
    assert status == 0 and "0 change(s)" in out, out
    assert {u: api("GET", f"users/{u}")["password_hash"] for u in n.values()} == before
    status, out = site.audit("status", "--json")
    report = json.loads(out)
    assert status == 0 and report["in_sync"] and report["differences"] == []


def test_status_names_each_difference_and_declare_mends_it(site):
    site.audit("declare")
    n = site.names
    api("PUT", f"permissions/{site.vhost}/{n['ann']}", {"configure": ".*", "write": ".*", "read": ".*"})
    api("DELETE", f"exchanges/{site.vhost}/xr_{n['bob']}")
    status, out = site.audit("status")
    assert status == 1
    assert f"permissions {n['ann']}: configure is '.*'" in out
    assert f"exchange xr_{n['bob']}: missing" in out
    status, out = site.audit("declare", "--dry-run")
    assert "2 change(s) needed" in out
    assert site.audit("status")[0] == 1
    site.audit("declare")
    assert site.audit("status")[0] == 0


def refused(action):
    """Whether the broker refuses `action` (it closes the channel with 403 or 406)."""
    try:
        action()
    except (amqp.exceptions.AccessRefused, amqp.exceptions.PreconditionFailed, amqp.exceptions.NotAllowed):
        return True
    return False


def publish(connection, exchange, **properties):
    connection.channel().basic_publish_confirm(amqp.Message(b"{}", **properties), exchange=exchange,
                                               routing_key="v02.post.x")


def test_users_can_touch_only_their_own_objects(site):
    site.audit("declare")
    n = site.names
    ann, anne = n["ann"], n["anne"]
    with site.connect("ann") as c:
        assert not refused(lambda: publish(c, f"xs_{ann}"))
        assert refused(lambda: publish(c, f"xs_{anne}"))           # a prefix of her name is not hers
        assert refused(lambda: publish(c, "xpublic"))              # only the pump publishes there
        assert refused(lambda: publish(c, f"xs_{ann}", user_id=anne))  # no posing as anne
        assert refused(lambda: c.channel().queue_declare(f"q_{anne}.x", durable=True, auto_delete=False))
        assert not refused(lambda: c.channel().queue_declare(f"q_{ann}.x", durable=True, auto_delete=False))
        assert refused(lambda: c.channel().queue_bind(f"q_{ann}.x", f"xr_{anne}", "#"))
        assert not refused(lambda: c.channel().queue_bind(f"q_{ann}.x", f"xr_{ann}", "#"))
        assert not refused(lambda: c.channel().queue_bind(f"q_{ann}.x", "xpublic", "#"))
        assert refused(lambda: c.channel().exchange_declare(f"xr_{ann}x", "topic"))
    with site.connect("bob") as c:
        assert not refused(lambda: publish(c, f"xs_{n['bob']}"))   # his own log messages
        assert refused(lambda: publish(c, f"xs_{ann}"))
        assert refused(lambda: c.channel().queue_declare(f"q_{ann}.y", durable=True, auto_delete=False))
        assert refused(lambda: c.channel().queue_bind(f"q_{ann}.x", "xpublic", "#"))  # not his queue


@pytest.mark.parametrize("line, message", [
    ("declare source a.b", "may only have letters, digits"),
    ("declare source .*", "may only have letters, digits"),
    ("declare king ann", "role must be one of source, subscriber, feeder, admin"),
    ("declare source", "expected a role and a user name"),
])
def test_a_bad_declaration_is_a_one_line_error_naming_the_line(site, line, message):
    site.write(f"admin amqp://guest@127.0.0.1/{site.vhost}\n{line}\n")
    status, out = site.audit("declare")
    assert status == 2
    assert "admin.conf:2" in out and message in out and "Traceback" not in out
    assert api("GET", f"vhosts/{site.vhost}") == 404    # nothing was changed


def test_a_user_without_a_password_is_named_with_the_fix(site):
    site.write(f"admin amqp://guest@127.0.0.1/{site.vhost}\ndeclare subscriber nopassword\n")
    status, out = site.audit("declare")
    assert status == 2
    assert "no password for user nopassword" in out and "credentials.conf" in out


def test_cleanup_removes_idle_and_overfull_dd_queues_only(site):
    site.audit("declare")
    with amqp.Connection("127.0.0.1:5672", userid="guest", password="guest", virtual_host=site.vhost) as c:
        channel = c.channel()
        for queue in ("q_ann.full", "q_ann.fine", "not_dd"):
            channel.queue_declare(queue, durable=True, auto_delete=False)
        for queue in ("q_ann.full", "not_dd"):
            for _ in range(3):
                channel.basic_publish_confirm(amqp.Message(b"x"), exchange="", routing_key=queue)
    # The management API's counts lag a few seconds behind the broker.
    seen = []

    def offers_to_remove():
        seen.append(site.audit("cleanup", "--dry-run", "--queue_limit", "2")[1])
        return "would remove queue q_ann.full" in seen[-1]
    assert wait_for(offers_to_remove, timeout=30, interval=1), seen[-1:]
    status, out = site.audit("cleanup", "--queue_limit", "2", "--json")
    assert status == 0
    assert json.loads(out)["removed"] == [{"queue": "q_ann.full", "reason": "holds 3 notices, over queue_limit 2"}]
    remaining = {q["name"] for q in api("GET", f"queues/{site.vhost}")}
    assert remaining == {"q_ann.fine", "not_dd"}


def test_a_queue_is_stale_after_expire_without_consumer():
    now = datetime.datetime(2026, 11, 29, 12, tzinfo=datetime.timezone.utc)
    idle = {"name": "q_bob.sub.x", "consumers": 0, "messages": 0, "idle_since": "2026-11-28T11:00:00.000+00:00"}
    assert stale(idle, now=now, expire=86400, limit=0) == "no consumer for 90000 s, over expire 86400 s"
    assert stale(dict(idle, idle_since="2026-11-28 13:00:00"), now=now, expire=86400, limit=0) is None
    assert stale(dict(idle, consumers=1), now=now, expire=3600, limit=0) is None
    assert stale(dict(idle, name="amq.gen-x"), now=now, expire=3600, limit=0) is None


def connections_of(site, user):
    """The names of the user's open connections to the site's vhost, as the management API lists
    them: a few seconds late (its statistics interval)."""
    listed = api("GET", f"vhosts/{site.vhost}/connections")
    return [c["name"] for c in listed if c["user"] == user and c.get("state") not in ("closing", "closed")] \
        if isinstance(listed, list) else []


def closed(action):
    """Whether `action` fails because the broker closed its connection (not only its channel)."""
    try:
        action()
    except (amqp.exceptions.ConnectionError, OSError):
        return True
    return False


def exchanges_and_queues(site):
    return ({e["name"] for e in api("GET", f"exchanges/{site.vhost}")},
            {q["name"] for q in api("GET", f"queues/{site.vhost}")})


def test_prune_revokes_a_user_removed_from_admin_conf_and_nothing_else(site):
    n = site.names
    bob = n["bob"]
    assert site.audit("declare")[0] == 0
    kept = site.connect("bob")      # bob's subscriber, still running when he is removed
    channel = kept.channel()
    queue = f"q_{bob}.subscribe.x"
    channel.queue_declare(queue, durable=True, auto_delete=False)
    channel.queue_bind(queue, "xpublic", "#")
    channel.basic_consume(queue, callback=lambda message: None)
    with site.connect("ann") as c:  # a queue of a user who stays
        c.channel().queue_declare(f"q_{n['ann']}.x", durable=True, auto_delete=False)
    assert wait_for(lambda: connections_of(site, bob), timeout=30, interval=0.5)
    [connection] = connections_of(site, bob)
    others = [u for role, u in n.items() if role != "bob"]
    permissions = {u: api("GET", f"permissions/{site.vhost}/{u}") for u in others}
    site.write("".join(line + "\n" for line in (site.config_dir / "admin.conf").read_text().splitlines()
                       if not line.endswith(f" {bob}")))

    status, out = site.audit("status")
    steps = (f"delete user {bob}, close connection {connection}, delete queue {queue}, "
             f"delete exchange xpriv_{bob}, delete exchange xr_{bob}, delete exchange xs_{bob}")
    assert status == 1
    assert f"user {bob}: not declared in admin.conf; declare --prune would: {steps}\n" in out, out
    report = json.loads(site.audit("status", "--json")[1])
    [difference] = report["differences"]
    assert difference["name"] == bob and not difference["declare_fixes"]
    assert difference["prune"][:2] == [{"action": "delete user", "name": bob},
                                       {"action": "close connection", "name": connection}]

    status, out = site.audit("declare")
    assert status == 0 and f"left alone: user {bob}: not declared in admin.conf; --prune would: {steps}\n" in out
    assert out.endswith("0 change(s) on vhost " + site.vhost + "; 1 undeclared user(s) left alone "
                        "(--prune revokes them)\n"), out
    status, out = site.audit("declare", "--prune", "--dry-run")
    assert status == 0 and f"would prune: user {bob}: not declared in admin.conf: {steps}\n" in out, out
    assert "6 change(s) needed" in out
    assert api("GET", f"permissions/{site.vhost}/{bob}")["write"]
    publish(kept, f"xs_{bob}")      # still in

    status, out = site.audit("declare", "--prune")
    assert status == 0 and f"pruned: user {bob}: not declared in admin.conf: {steps}" in out, out
    assert "dd_audit declare: 6 change(s)" in out
    with pytest.raises(amqp.exceptions.AccessRefused):
        site.connect("bob")
    assert closed(lambda: publish(kept, f"xs_{bob}"))
    exchanges, queues = exchanges_and_queues(site)
    assert not {f"xs_{bob}", f"xr_{bob}", f"xpriv_{bob}"} & exchanges and queue not in queues
    into_xreport = api("GET", f"exchanges/{site.vhost}/xreport/bindings/destination")
    assert f"xs_{bob}" not in {b["source"] for b in into_xreport}
    assert api("GET", f"users/{bob}") == 404
    # The others, and the admin, are as they were: status finds nothing to mend.
    assert {u: api("GET", f"permissions/{site.vhost}/{u}") for u in others} == permissions
    assert {f"xs_{u}" for u in others} <= exchanges and f"q_{n['ann']}.x" in queues
    with site.connect("ann") as c:
        assert not refused(lambda: publish(c, f"xs_{n['ann']}"))
    assert wait_for(lambda: not connections_of(site, bob), timeout=30, interval=0.5)
    assert site.audit("status") == (0, f"dd_audit status: vhost {site.vhost}, 4 user(s), in sync with admin.conf\n")
    status, out = site.audit("declare", "--prune")
    assert status == 0 and out == f"dd_audit declare: 0 change(s) on vhost {site.vhost}\n"


def test_prune_closes_only_this_vhost_and_leaves_a_login_another_pump_or_the_broker_has(site):
    n = site.names
    eve, admin = n["eve"], n["pump"]
    site.write(f"admin amqp://guest@127.0.0.1/{site.vhost}\ndeclare subscriber {eve}\ndeclare admin {admin}\n")
    assert site.audit("declare")[0] == 0
    other = f"{site.vhost}-other"
    site.other_vhosts.append(other)
    api("PUT", f"vhosts/{other}", {})
    api("PUT", f"permissions/{other}/{eve}", {"configure": "", "write": r"^amq\.topic$", "read": "^xpublic$"})
    here, there = site.connect("eve"), site.connect("eve", vhost=other)
    assert wait_for(lambda: connections_of(site, eve), timeout=30, interval=0.5)
    [connection] = connections_of(site, eve)
    site.write(f"admin amqp://guest@127.0.0.1/{site.vhost}\n")

    status, out = site.audit("status")
    assert status == 1
    assert (f"user {eve}: not declared in admin.conf; keeps its login: it has permissions on vhost {other}; "
            f"declare --prune would: revoke permissions on vhost {site.vhost}, close connection {connection}, "
            f"delete exchange xpriv_{eve}, delete exchange xr_{eve}, delete exchange xs_{eve}\n") in out, out
    assert (f"user {admin}: not declared in admin.conf; keeps its login: it is tagged administrator, a user of "
            f"the whole broker; declare --prune would: revoke permissions on vhost {site.vhost}, ") in out
    status, out = site.audit("declare", "--prune")
    assert status == 0, out
    assert closed(lambda: publish(here, f"xs_{eve}"))
    assert not refused(lambda: publish(there, "amq.topic"))     # its other pump's connection stays
    there.close()
    for who, name in (("eve", eve), ("pump", admin)):
        assert api("GET", f"users/{name}")["name"] == name
        assert api("GET", f"permissions/{site.vhost}/{name}") == 404
        with pytest.raises(amqp.exceptions.NotAllowed):     # its login is good, this vhost refuses it
            site.connect(who)
    assert api("GET", f"permissions/{other}/{eve}")["read"] == "^xpublic$"
    site.connect("eve", vhost=other).close()
    assert wait_for(lambda: not connections_of(site, eve), timeout=30, interval=0.5)
    assert site.audit("declare", "--prune")[1] == f"dd_audit declare: 0 change(s) on vhost {site.vhost}\n"


def test_a_user_named_as_a_directory_of_the_pumps_tree_is_refused(site):
    site.write(f"admin amqp://guest@127.0.0.1/{site.vhost}\ndeclare source private\n")
    status, out = site.audit("declare")
    assert status == 2 and "user private cannot be declared" in out and "Traceback" not in out
    assert api("GET", f"vhosts/{site.vhost}") == 404      # nothing was done


def test_with_quorum_queues_declare_sets_the_clusters_queue_policy_once_and_classic_removes_it(site):
    admin_conf = (site.config_dir / "admin.conf").read_text()
    site.write(admin_conf + "queue_type quorum\n")
    status, out = site.audit("declare")
    assert status == 0, out
    assert api("PUT", f"policies/{site.vhost}/theirs", {"pattern": "^x", "definition": {"max-length": 9}}) == 201
    assert "fixed: policy dd-quorum: missing" in out
    policy = api("GET", f"policies/{site.vhost}/dd-quorum")
    assert policy["pattern"] == "^q_" and policy["definition"] == {"queue-leader-locator": "balanced"}
    assert site.audit("status") == (0, f"dd_audit status: vhost {site.vhost}, 5 user(s), in sync with admin.conf\n")
    # A quorum queue a subscriber declares is under it: the broker applies it, whichever node.
    connection = site.connect("bob")
    queue = f"q_{site.names['bob']}.subscribe.quorum"
    connection.channel().queue_declare(queue, durable=True, auto_delete=False,
                                       arguments={"x-queue-type": "quorum"})
    connection.close()
    assert wait_for(lambda: api("GET", f"queues/{site.vhost}/{queue}").get("policy") == "dd-quorum", timeout=10)
    # Changed by hand: status says how, declare puts it back.
    api("PUT", f"policies/{site.vhost}/dd-quorum", {"pattern": "^q_", "definition": {"max-length": 1}})
    status, out = site.audit("status")
    assert status == 1 and "policy dd-quorum: is {'max-length': 1} on ^q_, should be" in out
    assert site.audit("declare")[0] == 0
    assert api("GET", f"policies/{site.vhost}/dd-quorum")["definition"] == {"queue-leader-locator": "balanced"}
    # Back to classic queues: ours goes, another's policy stays.
    site.write(admin_conf)
    status, out = site.audit("declare")
    assert "fixed: policy dd-quorum: not wanted" in out
    assert api("GET", f"policies/{site.vhost}/dd-quorum") == 404
    assert api("GET", f"policies/{site.vhost}/theirs")["definition"] == {"max-length": 9}
