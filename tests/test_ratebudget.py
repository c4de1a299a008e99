"""rate_max's shared budget (dd.store.ratebudget) against a real Redis: processes booking
under one configuration's name wait for each other's bytes; a dead Redis falls back to the
process's own pace, said once."""
import logging

import pytest

from dd.core.credentials import Url
from dd.store.ratebudget import SLACK, SharedPace
from dd.transfer.copy import PROCESS_PACE
from tests.support.servers import free_port

MB = 1_000_000


def test_bookings_of_one_configuration_queue_behind_each_other_and_others_do_not(redis_url):
    url = Url.parse(redis_url)
    one, two, other = (SharedPace(url, name, PROCESS_PACE.wait_for)
                       for name in ("sara/relay", "sara/relay", "sara/other"))
    try:
        first = one.wait_for(MB, 10 * MB)          # 0.1 s of budget, lent by the idle slack
        second = two.wait_for(MB, 10 * MB)         # another process: after the first
        assert first == pytest.approx(0.1 - SLACK, abs=0.02)
        assert second == pytest.approx(first + 0.1, abs=0.02)
        assert other.wait_for(MB, 10 * MB) == pytest.approx(first, abs=0.02)  # its own budget
    finally:
        for pace in (one, two, other):
            pace.close()


def test_a_redis_that_does_not_answer_leaves_each_process_its_own_pace_and_says_so_once(caplog):
    booked = []

    def alone(nbytes, rate):
        booked.append(nbytes)
        return 0.25

    pace = SharedPace(Url.parse(f"redis://127.0.0.1:{free_port()}/0"), "sara/relay", alone)
    with caplog.at_level(logging.WARNING, logger="dd.rate"):
        waits = [pace.wait_for(MB, 10 * MB) for _ in range(3)]
    pace.close()
    assert waits == [0.25] * 3 and booked == [MB] * 3
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].startswith("rate_store redis://127.0.0.1:")
    assert "pacing this process alone at rate_max meanwhile" in errors[0]
