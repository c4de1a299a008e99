"""Revoking a user admin.conf no longer declares, on a broker that other pumps share.

A pump owns its virtual host and nothing else, so pruning a user takes what it
has here: its permissions, its open connections (RabbitMQ keeps a connection
open after its permissions are revoked, some versions even after its user is
deleted) and what dd made for it (xs_<user> with its binding to xreport,
xr_<user>, xpriv_<user>, its q_<user>.* queues).  The
user itself is deleted only when no virtual host grants it anything else and it
has no tags: a tagged user (an administrator) belongs to the whole broker.

Access goes first, then connections, then objects.  Each of them is found from
what the broker still holds on this virtual host, so whatever an interrupted
prune left is found, and finished, by the next one.
"""
import dataclasses
from collections.abc import Callable

from dd.admin.audit.management import Management, tags_of
from dd.core.notice import USER_NAME
from dd.core.route import private_exchange

#: Connection states on their way out: the broker takes nothing more on them.
_ENDING = ("closing", "closed")


@dataclasses.dataclass(frozen=True)
class Step:
    action: str         # delete user, revoke permissions on vhost, close connection, delete queue, delete exchange
    name: str
    run: Callable = dataclasses.field(compare=False, repr=False)

    def __str__(self):
        return f"{self.action} {self.name}"

    def as_json(self):
        return {"action": self.action, "name": self.name}


@dataclasses.dataclass(frozen=True)
class Revocation:
    user: str
    problem: str        # for people: why it is pruned, and why its login stays, if it does
    steps: tuple        # of Step, in the order they run


def revocations(plan, api: Management, permissions: dict, exchanges: dict) -> list:
    """A Revocation for every user with anything on the plan's virtual host that
    admin.conf does not declare; permissions and exchanges: the vhost's, by name."""
    vhost = plan.vhost
    connections = [c for c in api.get("vhosts", vhost, "connections") or []
                   if c.get("user") and c.get("state") not in _ENDING]
    queues = [q["name"] for q in api.get("queues", vhost) or []]
    traces = set(permissions) | {c["user"] for c in connections}
    traces |= {owner for owner in map(_exchange_owner, exchanges) if owner}
    traces |= {owner for owner in map(_queue_owner, queues) if owner}
    declared = {plan.admin, *(user.name for user in plan.users)}
    found = []
    for user in sorted(traces - declared):
        problem, access = _access(api, vhost, user, has_permissions=user in permissions)
        reason = f"dd_audit: {user} is not declared on vhost {vhost} any more"
        steps = [*access,
                 *(Step("close connection", c["name"], _deleter(api, "connections", c["name"], reason=reason))
                   for c in connections if c["user"] == user),
                 *(Step("delete queue", q, _deleter(api, "queues", vhost, q))
                   for q in sorted(queues) if _queue_owner(q) == user),
                 *(Step("delete exchange", x, _deleter(api, "exchanges", vhost, x))
                   for x in sorted(exchanges) if _exchange_owner(x) == user)]
        found.append(Revocation(user, problem, tuple(steps)))
    return found


def _access(api, vhost, user, *, has_permissions):
    """(problem, steps) for the user's login and its permissions on `vhost`."""
    record = api.get("users", user)
    if record is None:
        return "not declared in admin.conf (no longer a broker user: what is left of it here)", []
    revoke = [Step("revoke permissions on vhost", vhost, _deleter(api, "permissions", vhost, user))] \
        if has_permissions else []
    tags = tags_of(record)
    if tags:
        return (f"not declared in admin.conf; keeps its login: it is tagged {','.join(tags)}, "
                "a user of the whole broker"), revoke
    elsewhere = sorted(p["vhost"] for p in api.get("users", user, "permissions") or [] if p["vhost"] != vhost)
    if elsewhere:
        return (f"not declared in admin.conf; keeps its login: it has permissions on vhost "
                f"{', '.join(elsewhere)}"), revoke
    # Deleting the user takes its permissions here with it, in one step.
    return "not declared in admin.conf", [Step("delete user", user, _deleter(api, "users", user))]


def _deleter(api, *path, reason=""):
    return lambda: api.delete(*path, reason=reason)


def _exchange_owner(name):
    """The user dd made exchange `name` for (xs_<user>, xr_<user>, xpriv_<user>), or None."""
    for prefix in ("xs_", "xr_", private_exchange("")):
        if name.startswith(prefix):
            return _user(name[len(prefix):])
    return None


def _queue_owner(name):
    """The user whose queue (q_<user>.<rest>) `name` is, or None."""
    user, dot, _ = name[2:].partition(".")
    return _user(user) if name.startswith("q_") and dot else None


def _user(name):
    return name if USER_NAME.fullmatch(name) else None
