"""The console's pages through Flask's test client, on a state directory made here: what a
page shows of an instance's records (transfers in flight), and what it never shows."""
import io
import json
import os

import pytest

from dd.admin.console import app
from dd.core import config
from dd.core.environment import Environment
from dd.pump import provenance
from dd.store import pidfile
from dd.store.state import ConfigState


@pytest.fixture
def console(tmp_path):
    config_dir = tmp_path / "config"
    (config_dir / "subscribe").mkdir(parents=True)
    (config_dir / "web").mkdir()
    (config_dir / "credentials.conf").write_text("amqp://guest:s3cret-pw@127.0.0.1/\n")
    (config_dir / "credentials.conf").chmod(0o600)
    (config_dir / "subscribe" / "bob.conf").write_text("directory /tmp\nallowed_schemes file\n")
    (config_dir / "web" / "console.conf").write_text("web_broker amqp://guest@127.0.0.1/\n")
    env = Environment(stdout=io.StringIO(), stderr=io.StringIO(), config_dir=config_dir,
                      state_dir=tmp_path / "state", log_dir=tmp_path / "log", environ={})
    the_app = app.make_app(config.load("web", "console", [], env), env)
    client = the_app.test_client()
    yield client, env
    the_app.config["DD_PROVENANCE"].close()
    the_app.config["DD_HISTORY"].close()


def test_a_configuration_page_shows_what_its_live_instance_has_in_flight(console):
    client, env = console
    state = ConfigState(env.state_dir, "subscribe", "bob")
    state.dir.mkdir(parents=True)
    pidfile.write(state.pid_file(1))    # this very process plays the live instance
    state.metrics_file(1).write_text(json.dumps({
        "pid": os.getpid(), "started": env.clock(), "updated": env.clock(), "received": 1, "delivered": 0,
        "in_flight": [{"file": "obs/big.grib", "bytes": 1024, "total": 4096}]}))
    with client.session_transaction() as session:
        session["user"] = "guest"
    page = client.get("/configuration/subscribe/bob").get_data(as_text=True)
    assert "subscribe/bob" in page and "running" in page
    assert "file: obs/big.grib" in page and "total: 4096" in page
    assert "s3cret-pw" not in page


def test_pages_refuse_who_has_not_signed_in_and_a_source_the_admin_pages(console):
    client, _ = console
    for path in ("/overview", "/configuration/subscribe/bob", "/provenance?name=a", "/file/1"):
        response = client.get(path)
        assert response.status_code == 401 and "sign in first" in response.get_data(as_text=True), path
    assert client.get("/metrics").status_code == 401
    with client.session_transaction() as session:
        session["user"] = "ann"
    assert client.get("/overview").status_code == 403
    assert client.get("/configuration/subscribe/bob").status_code == 403
    assert client.get("/metrics").status_code == 401
    assert client.get("/provenance").status_code == 200
    # The sign-in form goes back only to a page of the console.
    for target in ("//evil.example/", "/\\evil.example/", "https://evil.example/"):
        assert f'value="{target}"' not in client.get(f"/signin?target={target}").get_data(as_text=True)


def test_names_from_the_wire_are_shown_so_that_none_passes_for_another(console):
    from tests.test_provenance import made
    client, env = console
    store = client.application.config["DD_PROVENANCE"]
    store.keep([made("obs/report\u202etxt.exe", "ann", "b\u043eb")])   # a right-to-left override; a Cyrillic o
    with client.session_transaction() as session:
        session["user"] = "guest"
    found = client.get("/provenance?name=obs").get_data(as_text=True)
    assert "obs/report\\u202etxt.exe" in found and "\u202e" not in found
    route = client.get(f"/file/{store.search(provenance.Query())[0].id}").get_data(as_text=True)
    assert "b\\u043eb" in route and "\u043e" not in route


def test_a_search_by_time_finds_what_happened_between_since_and_until(console):
    from tests.test_provenance import T0, made
    client, env = console
    client.application.config["DD_PROVENANCE"].keep([made("obs/early.txt", "ann", "bob", at=0),
                                                      made("obs/late.txt", "ann", "bob", at=3600, checksum="cd")])
    with client.session_transaction() as session:
        session["user"] = "guest"

    def found(query):
        page = client.get(f"/provenance?{query}").get_data(as_text=True)
        return [name for name in ("obs/early.txt", "obs/late.txt") if name in page]
    assert found("since=2026-12-01T12:30") == ["obs/late.txt"]
    assert found("until=2026-12-01T12:30") == ["obs/early.txt"]
    assert found("since=2026-12-01T11:00&until=2026-12-01T14:00") == ["obs/early.txt", "obs/late.txt"]
    assert T0.isoformat().startswith("2026-12-01T12:00")


def test_a_files_route_starts_when_its_source_posted_it(console):
    from tests.test_provenance import made
    client, _ = console
    store = client.application.config["DD_PROVENANCE"]
    # Posted at 11:59:58, taken in by the pump at 12:00:00 (after 0.25 s), delivered to bob at 12:00:01.5.
    store.keep([made("obs/a.txt", "ann", "pump", "sara", at=0, posted=-2),
                made("ann/obs/a.txt", "ann", "bob", at=1.5, posted=-2)])
    with client.session_transaction() as session:
        session["user"] = "guest"
    page = client.get(f"/file/{store.search(provenance.Query(consumer='bob'))[0].id}").get_data(as_text=True)
    steps = [" ".join(step.split()) for step in page.split('<li class="step')[1:]]
    assert "posted by <strong>ann</strong> at" in steps[0] and "2026-12-01 11:59:58.000" in steps[0]
    assert "picked up at 2026-12-01 11:59:59.750" in steps[0]
    assert "2.000 s after it was posted" in steps[1] and "latency 3.500 s after it was posted" in steps[2]


def test_the_overview_and_metrics_show_last_received_and_last_sent_each_late_past_late_after(console):
    from prometheus_client.parser import text_string_to_metric_families
    client, env = console
    with open(env.config_dir / "subscribe" / "bob.conf", "a") as conf:
        conf.write("late_after 1h\n")
    state = ConfigState(env.state_dir, "subscribe", "bob")
    state.dir.mkdir(parents=True)
    pidfile.write(state.pid_file(1))    # this very process plays the live instance
    now = env.clock()
    state.metrics_file(1).write_text(json.dumps({
        "pid": os.getpid(), "started": now - 3 * 3600, "updated": now, "received": 5, "delivered": 4,
        "last_activity": now - 60, "last_received": now - 2 * 3600, "last_sent": now - 60}))
    with client.session_transaction() as session:
        session["user"] = "guest"
    page = client.get("/overview").get_data(as_text=True)
    received = page.split('class="last-received')[1].split("</td>")[0]
    sent = page.split('class="last-sent')[1].split("</td>")[0]
    assert "2 h ago" in received and "<strong>late</strong>" in received
    assert "60 s ago" in sent and "late" not in sent
    scraped = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
    labels = {"component": "subscribe", "configuration": "bob", "instance": "1"}
    assert [(s.labels, s.value) for s in scraped["dd_last_received_timestamp_seconds"].samples] == \
        [(labels, now - 2 * 3600)]
    assert [(s.labels, s.value) for s in scraped["dd_last_sent_timestamp_seconds"].samples] == [(labels, now - 60)]
