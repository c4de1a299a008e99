"""The flow's scheduling of work: on its own thread while items compute, side by side
on the work threads once they wait, in order for each path either way."""
import threading
import time

from dd import flow
from dd.core.notice import Notice, now
from dd.core.outcome import Outcome


class ListGatherer:
    """Gives `batches` one after the other, then says it is exhausted."""

    def __init__(self, batches):
        self.batches = list(batches)
        self.finished = []
        self.ticks = 0

    def fetch(self, timeout):
        return self.batches.pop(0) if self.batches else None

    def finish(self, items):
        self.finished += items

    def tick(self):
        self.ticks += 1

    def close(self):
        pass


def items(paths):
    return [flow.Item(Notice(pubtime=now(), base_url="http://h/", rel_path=p)) for p in paths]


class Recorder:
    """A work step that notes which thread did each item, in what order, and how many ran at once."""

    def __init__(self, wait=0.0):
        self.wait = wait
        self.lock = threading.Lock()
        self.running = self.most_at_once = 0
        self.done = []          # (rel_path, sequence number of its item, thread)

    def __call__(self, item):
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        if self.wait:
            time.sleep(self.wait)       # a server far away
        else:
            sum(range(2000))            # a small file from a nearby server: computing
        with self.lock:
            self.running -= 1
            self.done.append((item.notice.rel_path, item.sequence, threading.current_thread()))
        item.outcome = Outcome(201, "delivered")


def run(work, batch, threads=4):
    for n, item in enumerate(batch):
        item.sequence = n
    gatherer = ListGatherer([batch])
    counters = flow.Flow(gatherer=gatherer, accept=lambda item: True, work=work, threads=threads).run()
    return gatherer, counters


def test_work_that_computes_runs_on_the_flows_own_thread_in_order():
    work = Recorder()
    gatherer, counters = run(work, items(f"d/f{i}" for i in range(50)))
    assert counters.delivered == 50 and len(gatherer.finished) == 50
    assert {thread for _, _, thread in work.done} == {threading.main_thread()}
    assert [n for _, n, _ in work.done] == list(range(50))


def test_the_broker_is_served_through_a_long_batch_of_computing_items():
    # Heartbeats: a batch worked on the flow's own thread must not starve the connection.
    def work(item):
        until = time.thread_time() + 0.03
        while time.thread_time() < until:
            pass
        item.outcome = Outcome(201, "delivered")
    gatherer, counters = run(work, items(f"d/f{i}" for i in range(40)))
    assert counters.delivered == 40
    assert gatherer.ticks >= 1


def test_work_that_waits_runs_side_by_side_keeping_each_paths_order():
    work = Recorder(wait=0.02)
    paths = [f"d/f{i % 10}" for i in range(40)]    # four notices about each of ten files
    gatherer, counters = run(work, items(paths))
    assert counters.delivered == 40 and len(gatherer.finished) == 40
    assert work.most_at_once >= 2
    assert any(thread is not threading.main_thread() for _, _, thread in work.done)
    for path in set(paths):
        assert [n for p, n, _ in work.done if p == path] == sorted(n for p, n, _ in work.done if p == path)


def test_one_thread_never_runs_work_side_by_side():
    work = Recorder(wait=0.02)
    run(work, items(f"d/f{i}" for i in range(10)), threads=1)
    assert work.most_at_once == 1


def test_an_internal_error_in_one_item_is_its_500_and_the_flow_goes_on():
    def work(item):
        if item.notice.rel_path == "bad":
            raise RuntimeError("boom")
        item.outcome = Outcome(201, "delivered")
    gatherer, counters = run(work, items(["a", "bad", "b"]))
    outcomes = {i.notice.rel_path: i.outcome for i in gatherer.finished}
    assert outcomes["bad"].code == 500 and "boom" in outcomes["bad"].message
    assert counters.delivered == 2 and counters.failed == 1


def test_a_pipelined_flow_finishes_a_batch_while_the_next_is_worked_on_when_work_waits():
    a, b, c = (items(f"{name}/f{i}" for i in range(3)) for name in "abc")
    gatherer = ListGatherer([a, b, c])
    c_started = threading.Event()
    finish = gatherer.finish
    c_started_while_b_finished = []

    def finishing(batch):
        if batch is b:
            # With a barrier per batch, c would not start before b is finished: never.
            c_started_while_b_finished.append(c_started.wait(10))
        finish(batch)
    gatherer.finish = finishing

    def work(item):
        if item.notice.rel_path.startswith("c/"):
            c_started.set()
        else:
            time.sleep(0.02)    # waiting, as on a distant server: worth a thread of its own
        item.outcome = Outcome(201, "delivered")
    counters = flow.Flow(gatherer=gatherer, accept=lambda item: True, work=work, pipelined=True).run()
    assert c_started_while_b_finished == [True]
    assert counters.delivered == 9 and gatherer.finished == a + b + c


def test_a_pipelined_flow_keeps_work_that_computes_on_its_own_thread():
    # A second thread would only contend for the interpreter lock with the flow's.
    threads = set()

    def work(item):
        threads.add(threading.current_thread())
        sum(range(20_000))
        item.outcome = Outcome(201, "delivered")
    gatherer = ListGatherer([items(f"d{n}/f{i}" for i in range(20)) for n in range(5)])
    counters = flow.Flow(gatherer=gatherer, accept=lambda item: True, work=work, pipelined=True).run()
    assert threads == {threading.current_thread()} and counters.delivered == 100


def test_a_pipelined_flow_keeps_each_paths_order_across_batches():
    work = Recorder()
    batches = [items(f"d/f{i % 3}" for i in range(n, n + 6)) for n in range(0, 30, 6)]
    for n, item in enumerate(item for batch in batches for item in batch):
        item.sequence = n
    gatherer = ListGatherer(batches)
    flow.Flow(gatherer=gatherer, accept=lambda item: True, work=work, pipelined=True, threads=4).run()
    assert [n for _, n, _ in work.done] == list(range(30))
    assert [item.sequence for item in gatherer.finished] == list(range(30))


def test_a_stop_finishes_the_work_under_way_and_leaves_the_batch_not_started_unfinished():
    stop = threading.Event()
    first, second = items(["a"]), items(["b"])
    gatherer = ListGatherer([first, second])
    fetch = gatherer.fetch
    started = threading.Event()

    def fetching(timeout):
        batch = fetch(timeout)
        if batch is second:
            started.wait(10)    # the first is being worked on, the second waits for the work thread
            stop.set()
        return batch
    gatherer.fetch = fetching
    worked = []

    def work(item):
        started.set()
        time.sleep(0.2)
        worked.append(item.notice.rel_path)
        item.outcome = Outcome(201, "delivered")
    counters = flow.Flow(gatherer=gatherer, accept=lambda item: True, work=work, stop=stop, pipelined=True).run()
    assert worked == ["a"] and gatherer.finished == first      # "b" is not acknowledged: it comes again
    assert counters.delivered == 1


def test_a_batchs_accepted_items_are_prepared_at_once_before_any_of_their_work():
    seen = []

    def prepare(batch):
        seen.append(("prepare", [i.notice.rel_path for i in batch]))

    def work(item):
        seen.append(("work", item.notice.rel_path))
        item.outcome = Outcome(201, "delivered")
    gatherer = ListGatherer([items(["a", "skip", "b"]), items(["c"])])
    flow.Flow(gatherer=gatherer, accept=lambda item: item.notice.rel_path != "skip", prepare=prepare,
              work=work, pipelined=True).run()
    assert seen == [("prepare", ["a", "b"]), ("work", "a"), ("work", "b"), ("prepare", ["c"]), ("work", "c")]


def test_an_internal_error_preparing_a_batch_leaves_each_item_to_its_own_work(caplog):
    def prepare(batch):
        raise RuntimeError("boom")
    batch = items(["a", "b"])
    for n, item in enumerate(batch):
        item.sequence = n
    gatherer = ListGatherer([batch])
    counters = flow.Flow(gatherer=gatherer, accept=lambda item: True, prepare=prepare,
                         work=Recorder()).run()
    assert counters.delivered == 2 and len(gatherer.finished) == 2
    assert "internal error preparing a batch of 2" in caplog.text
