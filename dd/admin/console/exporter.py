"""/metrics: what every instance recorded, for Prometheus, through one endpoint.

A custom collector reads the instances' metrics files (dd.store.metrics) when Prometheus
scrapes, so any number of processes report through the console.  Names and labels are
documented in dd_ctl(8), METRICS.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from dd.admin.console.overview import Row
from dd.store import metrics
from dd.store.state import ConfigState

#: (metric name without dd_ and _total, key in an instance's record, help).
COUNTERS = (
    ("notices_received", "received", "notices received"),
    ("notices_posted", "posted", "notices published"),
    ("files_delivered", "delivered", "files delivered (downloaded, sent or relayed)"),
    ("bytes_delivered", "bytes", "bytes of the files delivered"),
    ("refusals", "rejected", "notices refused (a rule broken, a refusing plugin)"),
    ("failures", "failed", "transfers that failed (kept in the retry store)"),
)
#: (metric name, key in an instance's record, help) of the times an instance last did something.
TIMES = (
    ("dd_last_activity_timestamp_seconds", "last_activity",
     "when the instance last received or acted on a notice (Unix time)"),
    ("dd_last_received_timestamp_seconds", "last_received", "when the instance last received a notice (Unix time)"),
    ("dd_last_sent_timestamp_seconds", "last_sent",
     "when the instance last delivered a file or posted a notice (Unix time)"),
)
INSTANCE_LABELS = ["component", "configuration", "instance"]
LABELS = ["component", "configuration"]


class DDCollector(Collector):
    """Collects from `rows()`, the configurations as the overview sees them, and the state
    directory of `env`."""

    def __init__(self, rows: Callable[[], list[Row]], env: Any) -> None:
        self.rows = rows
        self.env = env

    def collect(self) -> Iterator[Metric]:
        rows = [r for r in self.rows() if not r.facts.error]
        counters = {name: CounterMetricFamily(f"dd_{name}", text, labels=INSTANCE_LABELS)
                    for name, _, text in COUNTERS}
        times = {key: GaugeMetricFamily(name, text, labels=INSTANCE_LABELS) for name, key, text in TIMES}
        for row in rows:
            facts = row.facts
            state = ConfigState(self.env.state_dir, facts.component, facts.name)
            for number in range(1, facts.expected + 1):
                record = metrics.read(state.metrics_file(number))
                if record is None:
                    continue
                labels = [facts.component, facts.name, str(number)]
                for name, key, _ in COUNTERS:
                    counters[name].add_metric(labels, record.get(key, 0))
                for key, gauge in times.items():
                    if record.get(key):
                        gauge.add_metric(labels, record[key])
        yield from counters.values()
        yield from times.values()
        gauges = {
            "running": GaugeMetricFamily("dd_instances_running", "instances running", labels=LABELS),
            "expected": GaugeMetricFamily("dd_instances_expected", "instances configured", labels=LABELS),
            "backlog": GaugeMetricFamily("dd_queue_backlog", "notices waiting in the configuration's queue",
                                         labels=LABELS),
            "lag": GaugeMetricFamily("dd_queue_lag_seconds", "age of the oldest notice in the queue",
                                     labels=LABELS),
            "retries": GaugeMetricFamily("dd_retry_store_size", "notices waiting in the retry stores",
                                         labels=LABELS),
            "errors": GaugeMetricFamily("dd_errors_last_hour", "errors logged in the last hour", labels=LABELS),
        }
        for row in rows:
            facts = row.facts
            labels = [facts.component, facts.name]
            gauges["running"].add_metric(labels, facts.running)
            gauges["expected"].add_metric(labels, facts.expected)
            gauges["errors"].add_metric(labels, facts.errors_last_hour)
            for key, value in (("backlog", facts.queue_depth), ("lag", row.lag), ("retries", facts.retries)):
                if value is not None:
                    gauges[key].add_metric(labels, value)
        yield from gauges.values()


def registry(rows: Callable[[], list[Row]], env: Any) -> CollectorRegistry:
    """A registry of dd's collector alone (no metrics of the console's own process)."""
    found = CollectorRegistry(auto_describe=False)
    found.register(DDCollector(rows, env))
    return found
