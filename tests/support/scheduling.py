"""How `pytest -n N --dist loadfile` hands test files to its workers.

xdist's own order (most tests first) starts the longest files last: the packaging tests
and the guides, a few tests of a minute or more each, ran alone at the end of the run
while the other workers idled. Here the files known to take longest go first, and the
files that need a RabbitMQ cluster go to one worker together, which starts one cluster
(a minute of two busy cores) instead of one per worker.
"""
import pytest

#: The test files that start a three-node RabbitMQ cluster (tests.support.cluster).
CLUSTER = ("tests/test_cluster.py", "tests/test_guides.py", "tests/test_pump_nodes.py")

#: Longest first, as measured on CI's 2-core machine (pytest --durations=0); the rest follow
#: in xdist's own order. A file missing here only starts later than it could.
LONGEST = ("cluster", "tests/test_packaging.py", "tests/test_mqtt.py", "tests/test_hostile.py",
           "tests/test_observe.py", "tests/test_logroute_topologies.py", "tests/test_logroute.py",
           "tests/test_wis2.py", "tests/test_hooks.py", "tests/test_sara.py", "tests/test_pump_fuzz.py",
           "tests/test_mirror.py", "tests/test_mqtt_rabbitmq.py", "tests/test_snapshot.py",
           "tests/test_watch.py", "tests/test_queue_types.py", "tests/test_sender.py",
           "tests/test_parts_pump.py", "tests/test_ranges.py", "tests/test_three_pumps.py",
           "tests/test_ctl.py", "tests/test_faults.py", "tests/test_console.py", "tests/test_audit.py",
           "tests/test_poll.py", "tests/test_formats.py", "tests/test_interop.py", "tests/test_fuzz.py",
           "tests/test_pidfile.py")


def _rank(scope):
    return LONGEST.index(scope) if scope in LONGEST else len(LONGEST)


@pytest.hookimpl(optionalhook=True)   # the hook exists only where pytest-xdist is installed
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class LongestFirst(LoadFileScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return "cluster" if path in CLUSTER else path

        def _assign_work_unit(self, node):
            # The indexes sent to the worker are of its own collection, which stays as it
            # is: only which file goes next changes.
            self.workqueue.move_to_end(min(self.workqueue, key=_rank), last=False)
            super()._assign_work_unit(node)

    return LongestFirst(config, log)
