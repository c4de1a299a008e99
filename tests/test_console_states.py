"""The state the console gives a configuration (dd.admin.console.overview.judge), from what
`dd_ctl status` knows and the thresholds of its options."""
import types

import pytest

from dd.admin.console import overview
from dd.admin.ctl.survey import Facts
from dd.core.errors import LsbStatus

NOW = 10_000.0
CFG = types.SimpleNamespace(state_hung=60.0, state_errors=10, state_lag=300.0, state_idle=900.0, check_backlog=1000)


def facts(state="running", **values):
    return Facts("subscribe", "bob", state, LsbStatus.RUNNING, running=1, expected=1,
                 **{"cfg": CFG, "last_activity": NOW - 5, **values})


@pytest.mark.parametrize("given, updated, lag, expected", [
    (facts(), NOW - 5, None, "running"),
    (facts("stopped"), None, None, "stopped"),
    (facts("partly running"), NOW, None, "partly running"),
    (facts("dead"), None, None, "dead"),
    (facts(), NOW - 61, None, "hung"),                           # no metrics written for state_hung
    (facts(), None, None, "hung"),
    (facts(errors_last_hour=10), NOW, None, "failing"),
    (facts(errors_last_hour=9), NOW, None, "running"),
    (facts(queue_depth=1001), NOW, None, "lagging"),             # over check_backlog
    (facts(queue_depth=5), NOW, 301.0, "lagging"),               # the oldest queued notice older than state_lag
    (facts(queue_depth=5), NOW, 299.0, "running"),
    (facts(last_activity=NOW - 901), NOW, None, "idle"),
    (facts(last_activity=None, started=NOW - 901), NOW, None, "idle"),
    (facts(errors_last_hour=20, queue_depth=5000, last_activity=NOW - 5000), NOW, None, "failing"),  # the worst
])
def test_each_state_holds_past_its_threshold(given, updated, lag, expected):
    assert overview.judge(given, NOW, updated, lag) == expected


def test_ages_read_as_a_person_says_them():
    assert [overview.age(s) for s in (None, 5, 119, 120, 7200, 3 * 86400)] == \
        ["never", "5 s", "119 s", "2 min", "2 h", "3 d"]


def test_last_received_or_sent_is_late_past_late_after_and_only_while_running():
    cfg = types.SimpleNamespace(**vars(CFG), late_after=3600.0)
    running = facts(cfg=cfg, started=NOW - 7200)
    assert running.late(NOW - 3601, NOW) and not running.late(NOW - 3599, NOW)
    assert running.late(None, NOW)                          # nothing since it started, 2 h ago
    assert not facts(cfg=cfg, started=NOW - 60).late(None, NOW)
    assert not facts("stopped", cfg=cfg, started=NOW - 7200).late(NOW - 7200, NOW)
    assert not facts(started=NOW - 7200).late(NOW - 7200, NOW)   # late_after unset: never late
