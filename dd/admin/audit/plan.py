"""What a pump's broker should hold, from admin.conf: users, their permissions, exchanges,
and the queue policies of a pump whose queues are quorum queues.

RabbitMQ grants each user three regular expressions per virtual host: which
objects it may configure (declare, delete), write (publish to, bind a queue)
and read (consume, bind from an exchange).  Every pattern here is anchored at
both ends and built from names that cannot carry pattern syntax, so `ann`
never matches `anne`'s objects.
"""
import dataclasses
import urllib.parse

from dd.core.errors import ConfigError
from dd.pump.namespace import RESERVED
from dd.core.route import private_exchange

PUBLIC_EXCHANGE = "xpublic"
#: Where every user's log messages meet, for the pump's log router (dd_shovel route_logs).
REPORT_EXCHANGE = "xreport"
REPORT_TOPIC = "v02.log.#"


@dataclasses.dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    role: str

    @property
    def tags(self):
        """RabbitMQ user tags: only admins reach the management API."""
        return ("administrator",) if self.role == "admin" else ()

    @property
    def permissions(self):
        u = self.name
        if self.role in ("admin", "feeder"):
            # A pump's own components read every xs_ exchange and write xpublic and xr_ ones.
            return Permissions(".*", ".*", ".*")
        own_queues = rf"q_{u}\..*"
        mine = f"^({own_queues}|xs_{u})$"
        readable = f"^({own_queues}|{PUBLIC_EXCHANGE}|xr_{u}|{private_exchange(u)})$"
        if self.role == "source":
            return Permissions(configure=mine, write=mine, read=readable)
        # A subscriber creates only its queues; it writes xs_<u> only for its log messages.
        return Permissions(configure=f"^{own_queues}$", write=mine, read=readable)


@dataclasses.dataclass(frozen=True)
class Policy:
    """A RabbitMQ policy, as the management API reads and writes it: one per vhost, and
    the cluster applies it on every node, to queues declared before and after it."""

    name: str
    pattern: str
    definition: dict
    apply_to: str = "queues"
    priority: int = 0

    def body(self):
        return {"pattern": self.pattern, "definition": self.definition, "apply-to": self.apply_to,
                "priority": self.priority}


#: Policies dd_audit owns are named so: others' it never touches.
POLICY_PREFIX = "dd-"
#: dd's queues (q_<user>.<component>.<config>...) on a cluster: each quorum queue's leader on
#: the node with the fewest leaders, not all on the node their consumers first reached.
QUORUM_POLICY = Policy(f"{POLICY_PREFIX}quorum", r"^q_", {"queue-leader-locator": "balanced"})


@dataclasses.dataclass(frozen=True)
class Plan:
    vhost: str
    admin: str                  # the administrator's user name, kept as it is
    users: tuple                # of User
    policies: tuple = ()        # of Policy

    @property
    def report_bindings(self):
        """(source exchange, destination exchange, routing key): each user's log messages
        also go to the log router's exchange."""
        return [(f"xs_{user.name}", REPORT_EXCHANGE, REPORT_TOPIC) for user in self.users]

    @property
    def exchanges(self):
        names = {PUBLIC_EXCHANGE, REPORT_EXCHANGE}
        for user in self.users:
            names |= {f"xs_{user.name}", f"xr_{user.name}", private_exchange(user.name)}
        return sorted(names)


def plan(cfg):
    """The Plan an `audit` configuration describes; ConfigError for contradictions."""
    cfg.require("admin")
    seen = {}
    for role, name in cfg.declare:
        if name in RESERVED:
            raise ConfigError(f"user {name} cannot be declared: a pump's tree has a directory of that name, "
                              "where each source's directory would be", fix="choose another name")
        if seen.get(name, role) != role:
            raise ConfigError(f"user {name} is declared both {seen[name]} and {role}",
                              fix="keep one declare line per user")
        seen[name] = role
    path = urllib.parse.unquote(cfg.admin.path)
    vhost = path[1:] if len(path) > 1 else "/"
    return Plan(vhost=vhost, admin=cfg.admin.user or "guest",
                users=tuple(User(name, role) for name, role in seen.items()),
                policies=(QUORUM_POLICY,) if cfg.queue_type == "quorum" else ())
