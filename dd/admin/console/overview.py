"""Each configuration as the overview shows it: `dd_ctl status`'s facts, judged into one state.

States, the first that holds: error (does not load), stopped, dead, partly running (from
the instances), hung (no instance wrote its metrics for state_hung), failing (state_errors
errors in the last hour), lagging (the oldest queued notice older than state_lag, or a
backlog over check_backlog), idle (nothing received for state_idle), running.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import urllib.parse
from typing import Any

from dd.admin.audit.management import DEFAULT_PORT, Management
from dd.admin.ctl import selection, survey
from dd.core import formats
from dd.core.errors import DDError
from dd.store import metrics
from dd.store.state import ConfigState

log = logging.getLogger("dd.console")


@dataclasses.dataclass
class Row:
    """One configuration on the overview."""

    facts: survey.Facts
    state: str
    updated: float | None = None        # when an instance last wrote its metrics
    lag: float | None = None            # age in seconds of the oldest queued notice

    @property
    def key(self) -> str:
        return f"{self.facts.component}/{self.facts.name}"


def judge(facts: survey.Facts, now: float, updated: float | None, lag: float | None) -> str:
    if facts.error or facts.state != "running":
        return facts.state
    cfg: Any = facts.cfg
    if updated is None or now - updated > cfg.state_hung:
        return "hung"
    if facts.errors_last_hour >= cfg.state_errors:
        return "failing"
    backlog_over = facts.queue_depth is not None and facts.queue_depth > getattr(cfg, "check_backlog", 0)
    if backlog_over or (lag is not None and lag > cfg.state_lag):
        return "lagging"
    since = facts.last_activity or facts.started
    if since is not None and now - since > cfg.state_idle:
        return "idle"
    return "running"


def _updated(facts: survey.Facts, env: Any) -> float | None:
    """When a live instance last wrote its metrics."""
    state = ConfigState(env.state_dir, facts.component, facts.name)
    times = [record.get("updated", 0.0) for number, pid in facts.pids.items()
             if (record := metrics.read(state.metrics_file(number))) and record.get("pid") == pid]
    return max(times, default=None)


def rows(env: Any, management: Management | None, selectors: list[str] | None = None) -> list[Row]:
    """Every configuration (or those `selectors` name), surveyed and judged now."""
    everything = survey.survey(selection.select(env, selectors or []), env)
    now = env.clock()
    found = []
    for facts in everything:
        updated = None if facts.error else _updated(facts, env)
        lag = oldest_lag(management, facts, now) if management and facts.queue_depth else None
        found.append(Row(facts, judge(facts, now, updated, lag), updated, lag))
    return found


def oldest_lag(management: Management, facts: survey.Facts, now: float) -> float | None:
    """Age of the notice at the head of the configuration's queue, peeked at and put back
    (it is redelivered as it was); None when it cannot be read."""
    cfg: Any = facts.cfg
    vhost = urllib.parse.unquote(cfg.broker.path.lstrip("/")) or "/"
    try:
        got = management.post("queues", vhost, facts.queue, "get",
                               body={"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto",
                                     "truncate": 1 << 20})
        if not got:
            return None
        head = got[0]
        notice = formats.decode(head["payload"].encode(), head.get("properties", {}).get("headers") or {})
    except (DDError, KeyError, TypeError, IndexError) as error:
        log.debug("cannot peek at queue %s: %s", facts.queue, error)
        return None
    return max(now - notice.pubtime.timestamp(), 0.0)


def management_of(cfg: Any) -> Management | None:
    """The management API of web_broker, as its user; None when web_broker is unset."""
    if cfg.web_broker is None:
        return None
    url = cfg.credentials.complete(cfg.web_broker)
    api = str(cfg.management_url) if cfg.management_url else \
        f"http://{urllib.parse.quote(url.host, safe='[]:')}:{DEFAULT_PORT}/"
    return Management(api, url.user, url.password or "", timeout=5.0)


def age(seconds: float | None) -> str:
    """'12 s', '3 min', '2 h', '4 d': how long ago, for a table cell."""
    if seconds is None:
        return "never"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size * 2:
            return f"{seconds // size:.0f} {unit}"
    return f"{seconds:.0f} s"


def clock_time(when: float | None, precise: bool = False) -> str:
    """A time in UTC, to the second or (`precise`) to the millisecond."""
    if when is None:
        return "-"
    text = datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    return text[:-3] if precise else text[:-7]
