"""What dd_poll announced of a tree, kept in SQLite (one host) and in Redis (several), held
to one suite: what is recorded is what the next listing is compared with, by this poller
and by any other sharing the record; then what only the Redis one does when Redis stops
answering."""
import pytest

from dd.core.credentials import Url
from dd.core.errors import StoreUnavailable
from dd.store import polled

SOURCE = "xs_feed https://data.example.com/obs/"
ODD_NAME = "café/résumé 1#.txt"


@pytest.fixture(params=["sqlite", "redis"])
def open_record(request, tmp_path):
    """Opens the record under test of a source: the same record each time, as another poller does."""
    url = Url.parse(request.getfixturevalue("redis_url")) if request.param == "redis" else None
    opened = []

    def open_one(source=SOURCE, namespace="poll/feeder"):
        opened.append(polled.opened(url, tmp_path / "polled.sqlite", source, namespace))
        return opened[-1]
    yield open_one
    for record in opened:
        record.close()


def test_what_one_poller_recorded_is_what_another_compares_with(open_record):
    first, second = open_record(), open_record()
    assert not second.listed_before()
    first.mark_listed()
    first.record([("a.txt", (7, 1_700_000_040.0)), ("sub/b bin#1", (5000, 1_700_000_040.25)),
                  (ODD_NAME, (3, 1_700_000_100.5))])
    assert second.listed_before()
    assert second.known() == {"a.txt": (7, 1_700_000_040.0), "sub/b bin#1": (5000, 1_700_000_040.25),
                              ODD_NAME: (3, 1_700_000_100.5)}
    # Changed, then deleted and back, in one record: the last word on a path stands.
    second.record([("a.txt", (16, 1_700_000_160.0)), ("sub/b bin#1", None), (ODD_NAME, None),
                   (ODD_NAME, (4, 1_700_000_200.0))])
    assert first.known() == {"a.txt": (16, 1_700_000_160.0), ODD_NAME: (4, 1_700_000_200.0)}


def test_trees_keep_records_apart(open_record):
    open_record().record([("a.txt", (7, 1.0))])
    assert open_record(source="xs_feed https://other.example.com/").known() == {}
    assert not open_record(source="xs_feed https://other.example.com/").listed_before()


def test_users_sharing_a_redis_keep_records_apart(redis_url):
    url = Url.parse(redis_url)
    mine, theirs = (polled.opened(url, "/nonexistent", SOURCE, f"poll/{user}") for user in ("feeder", "other"))
    try:
        mine.mark_listed()
        mine.record([("a.txt", (7, 1.0))])
        assert theirs.known() == {} and not theirs.listed_before()
    finally:
        mine.close()
        theirs.close()


def test_a_record_redis_did_not_take_is_kept_and_sent_before_the_next_comparison(redis_user, caplog):
    record = polled.opened(Url.parse(redis_user.url), "/nonexistent", SOURCE, "poll/feeder")
    try:
        record.record([("a.txt", (7, 1.0))])
        redis_user.answered(False)
        record.record([("b.txt", (8, 2.0)), ("a.txt", None)])          # announced: not to be lost
        assert "2 announcement(s) kept until it answers" in caplog.text
        with pytest.raises(StoreUnavailable) as error:
            record.known()              # a listing is not compared with a record short of them
        message = str(error.value)
        assert message.startswith(f"nodupe_store redis://{redis_user.name}@") and "unavailable" in message
        assert redis_user.password not in message and "\n" not in message
        redis_user.answered(True)
        assert record.known() == {"b.txt": (8, 2.0)}
    finally:
        record.close()
