"""What `status` and `check` report about each configuration: instances, metrics, queue.

Instances come from pid files and /proc, figures from the metrics each
instance writes (dd.store.metrics), retries from the instances' retry stores, the
queue depth from a passive declaration on the configuration's broker.  A
broker that cannot be asked leaves the depth unknown (None), never a hang or
a traceback.
"""
import dataclasses
import logging
from typing import Optional

from dd import broker
from dd.broker import failover
from dd.core import config
from dd.core.credentials import Url
from dd.store import metrics, retry
from dd.admin import instances, runners
from dd.core.errors import BrokerError, DDError, LsbStatus
from dd.store.state import ConfigState

log = logging.getLogger("dd.ctl")
BROKER_TIMEOUT = 5.0


@dataclasses.dataclass
class Facts:
    """One configuration, as `status --json` reports it (see dd_ctl(8), STATUS AS JSON)."""

    component: str
    name: str
    state: str                          # running, partly running, dead, stopped, error
    status: LsbStatus                   # of this configuration
    running: int = 0
    expected: int = 0
    pids: dict = dataclasses.field(default_factory=dict)
    dead: list = dataclasses.field(default_factory=list)
    received_per_minute: float = 0.0
    posted_per_minute: float = 0.0
    files: int = 0
    bytes: int = 0
    last_activity: Optional[float] = None
    last_received: Optional[float] = None   # the latest notice received, by any instance
    last_sent: Optional[float] = None       # the latest file delivered or notice posted
    received_late: bool = False             # last_received (or the start) older than late_after
    sent_late: bool = False                 # last_sent (or the start) older than late_after
    started: Optional[float] = None     # when the earliest live instance started
    errors_last_hour: int = 0
    queue: Optional[str] = None
    queue_depth: Optional[int] = None   # None: no queue, or the broker could not be asked
    consumers: Optional[int] = None
    retries: Optional[int] = None       # notices in the retry stores; None: a store unreadable
    in_flight: list = dataclasses.field(default_factory=list)  # metrics.InFlight of the live instances
    last_error: Optional[dict] = None   # time, rel_path, message of the latest failure
    #: The broker node each running instance is connected to (instance number as a string to
    #: its URL, without password; "" between connections).
    broker_nodes: dict = dataclasses.field(default_factory=dict)
    #: What those brokers cannot do that dd would use (an MQTT 3.1.1 broker's missing shared
    #: subscriptions), one phrase each.
    broker_limits: list = dataclasses.field(default_factory=list)
    error: Optional[str] = None
    cfg: object = dataclasses.field(default=None, repr=False)

    def late(self, when, now):
        """Whether a running configuration last did something (at `when`, None: not since it
        started) longer than late_after ago; never when late_after is unset."""
        late_after = getattr(self.cfg, "late_after", None)
        since = when or self.started
        return bool(late_after and self.state == "running" and since is not None and now - since > late_after)

    def as_json(self):
        record = dataclasses.asdict(self)
        del record["cfg"]
        record["pids"] = {str(k): v for k, v in self.pids.items()}
        record["in_flight"] = [dataclasses.asdict(f) for f in self.in_flight]
        return record


def survey(configurations, env, *, queues=True):
    """Facts for each configuration; `queues` False skips the brokers."""
    depths = _Depths()
    try:
        return [_facts(c, env, depths if queues else None) for c in configurations]
    finally:
        depths.close()


def _facts(configuration, env, depths):
    try:
        cfg = config.load(configuration.component, configuration.name, [], env)
    except DDError as error:
        return Facts(configuration.component, configuration.name, "error", LsbStatus.UNKNOWN,
                     error=str(error))
    return facts_of(configuration.component, configuration.name, cfg, env, depths)


def one(component, cfg, env):
    """Facts of one loaded configuration, its queue depth asked of its broker."""
    depths = _Depths()
    try:
        return facts_of(component, cfg.name, cfg, env, depths)
    finally:
        depths.close()


def facts_of(component, name, cfg, env, depths):
    state = ConfigState(env.state_dir, component, cfg.name)
    expected = cfg.instances
    status, count = instances.status(state, expected)
    facts = Facts(component, name, instances.state_word(status, count),
                  status, running=count, expected=expected, pids=instances.running(state),
                  dead=instances.dead(state), cfg=cfg)
    _add_metrics(facts, state)
    now = env.clock()
    facts.received_late, facts.sent_late = facts.late(facts.last_received, now), facts.late(facts.last_sent, now)
    waiting = [retry.waiting(path) for path in state.retry_files()]
    facts.retries = None if None in waiting else sum(waiting)
    module = runners.module_of(component)
    if module.consumer is not None and cfg.broker:
        facts.queue = cfg.queue or state.known_queue()
        if depths is not None and facts.queue:
            size = depths.size(cfg.credentials.complete(cfg.broker), facts.queue)
            if size is not None:
                facts.queue_depth, facts.consumers = size
    return facts


def _add_metrics(facts, state):
    """Sum what this configuration's instances recorded; rates only from live ones."""
    activity = received = sent = 0.0
    for instance in range(1, facts.expected + 1):
        record = metrics.read(state.metrics_file(instance))
        if record is None:
            continue
        facts.files += record.get("delivered", 0)
        facts.bytes += record.get("bytes", 0)
        facts.errors_last_hour += record.get("errors_last_hour", 0)
        activity = max(activity, record.get("last_activity", 0.0))
        received = max(received, record.get("last_received", 0.0))
        sent = max(sent, record.get("last_sent", 0.0))
        last_error = record.get("last_error")
        if last_error and (facts.last_error is None or last_error["time"] > facts.last_error["time"]):
            facts.last_error = last_error
        if facts.pids.get(instance) == record.get("pid"):
            facts.in_flight += metrics.in_flight(record)
            facts.started = min(facts.started or record["started"], record["started"])
            facts.received_per_minute += record.get("received_per_minute", 0.0)
            facts.posted_per_minute += record.get("posted_per_minute", 0.0)
            if "broker" in record:
                facts.broker_nodes[str(instance)] = record["broker"]
            limits = record.get("broker_limits")
            said = limits and f"broker {Url.parse(record['broker']).netloc} {limits}"
            if said and said not in facts.broker_limits:
                facts.broker_limits.append(said)
    facts.last_activity, facts.last_received, facts.last_sent = activity or None, received or None, sent or None


class _Depths:
    """Queue sizes, one connection per broker; a broker that failed once is not asked again."""

    def __init__(self):
        self._connections = {}

    def size(self, url, queue):
        if broker.is_mqtt(url):
            return None     # MQTT cannot ask how much waits in a session
        key = str(url)
        if key not in self._connections:
            try:    # a cluster's first node that answers
                self._connections[key] = failover.Endpoints(url).first_answering(
                    lambda each: broker.connect(each, timeout=BROKER_TIMEOUT, name="dd_ctl"))
            except BrokerError as error:
                log.warning("%s", error)
                self._connections[key] = None
        connection = self._connections[key]
        if connection is None:
            return None
        try:
            return broker.queue_size(connection, queue)
        except broker.CONNECTION_ERRORS as error:
            log.warning("broker %s: cannot ask the size of queue %s: %s", url, queue, error)
            return None

    def close(self):
        for connection in self._connections.values():
            if connection is not None:
                broker.close_quietly(connection)
