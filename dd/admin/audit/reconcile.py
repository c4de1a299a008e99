"""How the broker differs from the plan, as a list of changes declare can make.

`status` prints the differences, `declare` applies them: one comparison
serves both, so what status calls in sync is exactly what declare leaves alone,
and what status says `declare --prune` would do is what it does.
"""
import dataclasses
from typing import Callable, Optional

from dd.admin.audit import prune
from dd.admin.audit.management import password_matches, tags_of
from dd.admin.audit.plan import POLICY_PREFIX, User
from dd.core.credentials import Url
from dd.core.errors import ConfigError

EXCHANGE = {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}


@dataclasses.dataclass(frozen=True)
class Difference:
    kind: str                       # vhost, user, permissions, exchange, binding, policy
    name: str
    problem: str                    # what is wrong, for people
    fix: Optional[Callable] = None  # makes the broker right; None: declare leaves it (reported)
    prune: tuple = ()               # of prune.Step: what only declare --prune does about it

    def __str__(self):
        return f"{self.kind} {self.name}: {self.problem}"

    @property
    def pruning(self):
        """The prune steps, for people."""
        return ", ".join(map(str, self.prune))

    def as_json(self):
        return {"kind": self.kind, "name": self.name, "problem": self.problem, "declare_fixes": bool(self.fix),
                "prune": [step.as_json() for step in self.prune]}


def password_of(user, admin_url, credentials):
    """The password credentials.conf holds for `user` on the pump's broker."""
    wanted = Url(scheme=admin_url.scheme, user=user.name, host=admin_url.host, port=admin_url.port)
    password = credentials.password_for(wanted)
    if password is None:
        raise ConfigError(f"no password for user {user.name} on {admin_url.host}",
                          fix=f"add a line {wanted.scheme}://{user.name}:PASSWORD@{admin_url.host}/ "
                              "to credentials.conf")
    return password


def differences(plan, api, passwords):
    """Every way the broker behind `api` differs from `plan`; passwords: user name → password."""
    found = []
    vhost = plan.vhost
    exists = api.get("vhosts", vhost) is not None
    if not exists:
        found.append(Difference("vhost", vhost, "missing", lambda: api.put("vhosts", vhost, body={})))
        current_permissions, current_exchanges = {}, {}
    else:
        current_permissions = {p["user"]: p for p in api.get("vhosts", vhost, "permissions") or []}
        current_exchanges = {e["name"]: e for e in api.get("exchanges", vhost) or []}
    for user in plan.users:
        found += _user_differences(api, user, passwords[user.name])
    admin = User(plan.admin, "admin")
    for user in (admin, *plan.users):
        found += _permission_differences(api, vhost, user, current_permissions.get(user.name))
    for name in plan.exchanges:
        found += _exchange_differences(api, vhost, name, current_exchanges.get(name))
    for source, destination, key in plan.report_bindings:
        found += _binding_differences(api, vhost, source, destination, key)
    found += _policy_differences(api, vhost, plan.policies, (api.get("policies", vhost) or []) if exists else [])
    if exists:
        found += [Difference("user", r.user, r.problem, prune=r.steps)
                  for r in prune.revocations(plan, api, current_permissions, current_exchanges)]
    return found


def _user_differences(api, user, password):
    record = api.get("users", user.name)
    body = {"password": password, "tags": ",".join(user.tags)}

    def put():
        api.put("users", user.name, body=body)
    if record is None:
        return [Difference("user", user.name, f"missing ({user.role})", put)]
    problems = []
    if not password_matches(record, password):
        problems.append("password differs from credentials.conf")
    tags = tags_of(record)
    if sorted(tags) != sorted(user.tags):
        problems.append(f"tags are {','.join(tags) or 'none'}, should be {','.join(user.tags) or 'none'}")
    return [Difference("user", user.name, "; ".join(problems), put)] if problems else []


def _permission_differences(api, vhost, user, current):
    wanted = dataclasses.asdict(user.permissions)

    def put():
        api.put("permissions", vhost, user.name, body=wanted)
    if current is None:
        return [Difference("permissions", user.name, f"none on {vhost}", put)]
    wrong = [f"{k} is {current.get(k)!r}, should be {v!r}" for k, v in wanted.items() if current.get(k) != v]
    return [Difference("permissions", user.name, "; ".join(wrong), put)] if wrong else []


def _exchange_differences(api, vhost, name, current):
    if current is None:
        return [Difference("exchange", name, "missing",
                           lambda: api.put("exchanges", vhost, name, body=EXCHANGE))]
    if current.get("type") != "topic" or not current.get("durable") or current.get("auto_delete"):
        return [Difference("exchange", name, "exists but is not a durable topic exchange (declare cannot "
                                             "change that: delete it, then declare again)")]
    return []


def _policy_differences(api, vhost, wanted, current):
    """Ours (dd-...) only: missing or different ones put, unwanted ones (queue_type no
    longer quorum) deleted."""
    ours = {p["name"]: p for p in current if p["name"].startswith(POLICY_PREFIX)}
    found = []
    for policy in wanted:
        have = ours.pop(policy.name, None)
        if have is None or {k: have.get(k) for k in policy.body()} != policy.body():
            found.append(Difference("policy", policy.name, "missing" if have is None else
                                    f"is {have.get('definition')} on {have.get('pattern')}, should be "
                                    f"{policy.definition} on {policy.pattern}",
                                    lambda policy=policy: api.put("policies", vhost, policy.name,
                                                                  body=policy.body())))
    for name in sorted(ours):
        found.append(Difference("policy", name, "not wanted (queue_type is not quorum in admin.conf)",
                                lambda name=name: api.delete("policies", vhost, name)))
    return found


def _binding_differences(api, vhost, source, destination, key):
    current = api.get("bindings", vhost, "e", source, "e", destination) or []
    if any(b.get("routing_key") == key for b in current):
        return []
    return [Difference("binding", f"{source} -> {destination}", f"missing (routing key {key})",
                       lambda: api.post("bindings", vhost, "e", source, "e", destination,
                                        body={"routing_key": key, "arguments": {}}))]
