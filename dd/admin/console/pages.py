"""The console's pages: overview, one configuration, provenance search, a file's route, /metrics."""
from __future__ import annotations

import datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import flask
import prometheus_client

from dd.admin import logs
from dd.admin.console import auth, exporter, overview, plot
from dd.admin.ctl import selection
from dd.core.errors import DDError
from dd.core.options import parse_duration
from dd.pump import provenance
from dd.store import metrics
from dd.store.state import ConfigState

blueprint = flask.Blueprint("console", __name__)
HOUR, DAY = 3600.0, 86400.0
#: Lines of each instance's log the configuration page shows.
TAIL_LINES = 60
#: Errors of the last hour shown per configuration on the overview.
LATEST_ERRORS = 3


def _cfg() -> Any:
    return flask.current_app.config["DD_CFG"]


def _env() -> Any:
    return flask.current_app.config["DD_ENV"]


def _store() -> provenance.Store:
    return flask.current_app.config["DD_PROVENANCE"]


def _rows(selectors: list[str] | None = None) -> list[overview.Row]:
    return overview.rows(_env(), overview.management_of(_cfg()), selectors)


def _render(template: str, **values: Any) -> str:
    return flask.render_template(template, **values)


@blueprint.route("/signin", methods=["GET", "POST"])
def signin() -> Any:
    target = flask.request.values.get("target", "/")
    if not target.startswith("/") or target[1:2] in ("/", "\\"):
        target = "/"    # only a page of this console, never another site
    if flask.request.method == "GET":
        return _render("signin.html", error=None, target=target)
    name = flask.request.form.get("user", "")
    why = auth.check(_cfg(), name, flask.request.form.get("password", ""))
    if why is not None:
        return _render("signin.html", error=why, target=target), HTTPStatus.UNAUTHORIZED
    flask.session.clear()
    flask.session["user"] = name
    return flask.redirect(target)


@blueprint.route("/signout", methods=["POST"])
def signout() -> Any:
    flask.session.clear()
    return flask.redirect(flask.url_for("console.signin"))


@blueprint.route("/")
@auth.required()
def home() -> Any:
    user = auth.current()
    assert user is not None
    return flask.redirect(flask.url_for("console.overview_page" if user.admin else "console.search"))


@blueprint.route("/overview")
@auth.required(admin=True)
def overview_page() -> Any:
    now = _env().clock()
    history = flask.current_app.config["DD_HISTORY"]
    shown = []
    for row in _rows():
        points = history.points(row.key, now - DAY)
        recent = [p for p in points if p.at >= now - HOUR]
        backlog = [p.backlog for p in recent if p.backlog is not None]
        shown.append(dict(
            row=row, files_per_second=points[-1].files_per_second if points else 0.0,
            bytes_per_second=points[-1].bytes_per_second if points else 0.0,
            trend=(backlog[-1] - backlog[0]) if len(backlog) > 1 else None,
            hour=plot.line([(p.at, p.files_per_second) for p in recent], start=now - HOUR, end=now,
                           title="files/s, last hour"),
            day=plot.line([(p.at, p.files_per_second) for p in points], start=now - DAY, end=now,
                          title="files/s, last day"),
            errors=_errors(row) if row.facts.errors_last_hour else []))
    return _render("overview.html", shown=shown)


def _tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file, read from its end."""
    try:
        with open(path, "rb") as log_file:
            log_file.seek(0, 2)
            size = log_file.tell()
            log_file.seek(max(size - lines * 256, 0))   # generous for a log line
            text = log_file.read().decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _log_lines(row: overview.Row, lines: int) -> dict[int, list[str]]:
    env = _env()
    return {number: _tail(logs.log_file(env.log_dir, row.facts.component, row.facts.name, number), lines)
            for number in range(1, max(row.facts.expected, 1) + 1)}


def _errors(row: overview.Row) -> list[str]:
    """The latest error lines of the configuration's logs."""
    found = [line for lines in _log_lines(row, 512).values() for line in lines
             if logs.is_error(line)]
    return sorted(found)[-LATEST_ERRORS:]


@blueprint.route("/configuration/<component>/<name>")
@auth.required(admin=True)
def configuration(component: str, name: str) -> Any:
    try:
        found = _rows([str(selection.one(_env(), f"{component}/{name}"))])
    except DDError as error:
        return _render("refused.html", why=str(error)), HTTPStatus.NOT_FOUND
    row = found[0]
    cfg = row.facts.cfg
    events = []
    if cfg is not None and getattr(cfg, "broker", None) is not None:
        query = provenance.Query(consumer=cfg.broker.user or "")
        events = [e for e in _store().search(query) if e.component == component][:50]
    return _render("configuration.html", row=row, options=cfg.render() if cfg is not None else "",
                   tails=_log_lines(row, TAIL_LINES), events=events, in_flight=_in_flight(row))


def _in_flight(row: overview.Row) -> list[dict[str, Any]]:
    """The transfers under way, as the live instances record them in their metrics files
    (a list of records under "in_flight", when their flow keeps one)."""
    state = ConfigState(_env().state_dir, row.facts.component, row.facts.name)
    found = []
    for number, pid in sorted(row.facts.pids.items()):
        record = metrics.read(state.metrics_file(number)) or {}
        if record.get("pid") == pid and isinstance(record.get("in_flight"), list):
            found += [dict(item, instance=number) for item in record["in_flight"] if isinstance(item, dict)]
    return found


def _since(text: str) -> float | None:
    """A search's start or end: an age like 1h or 2d, or an ISO time (UTC)."""
    if not text:
        return None
    try:
        return _env().clock() - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)).timestamp()


@blueprint.route("/provenance")
@auth.required()
def search() -> Any:
    user = auth.current()
    assert user is not None
    values = flask.request.args
    query = provenance.Query(name=values.get("name", "").strip(), source=values.get("source", "").strip(),
                             consumer=values.get("consumer", "").strip(),
                             outcome=values.get("outcome", "") if values.get("outcome") in provenance.OUTCOMES
                             else "", since=_since(values.get("since", "").strip()),
                             until=_since(values.get("until", "").strip()))
    asked = any(values.get(k) for k in ("name", "source", "consumer", "outcome", "since", "until"))
    events = _store().search(query, sources=user.sources()) if asked else []
    files = provenance.files(events)
    return _render("provenance.html", values=values, files=files, asked=asked, outcomes=provenance.OUTCOMES)


@blueprint.route("/file/<int:event_id>")
@auth.required()
def route(event_id: int) -> Any:
    user = auth.current()
    assert user is not None
    event = _store().event(event_id)
    sources = user.sources()
    if event is None or (sources is not None and event.source not in sources):
        # Another source's file is not there, as far as this user can tell.
        return _render("refused.html", why=f"no file {event_id} of yours"), HTTPStatus.NOT_FOUND
    return _render("file.html", event=event, route=_store().route(event))


@blueprint.route("/metrics")
def prometheus() -> Any:
    user = auth.current() or auth.basic(_cfg(), flask.request.authorization)
    if user is None or not user.admin:
        return flask.Response("sign in as an administrator (HTTP basic authentication)\n", HTTPStatus.UNAUTHORIZED,
                              {"WWW-Authenticate": 'Basic realm="dd console"'})
    registry = exporter.registry(_rows, _env())
    return flask.Response(prometheus_client.generate_latest(registry),
                          content_type=prometheus_client.CONTENT_TYPE_LATEST)

