"""dd_ctl check: a Nagios-style plugin — one line, perfdata, exit 0/1/2 (OK/WARNING/CRITICAL).

Per configuration: a dead or missing instance is CRITICAL, a stopped configuration
a WARNING (its queue is still checked); the queue backlog is compared with check_backlog and
check_backlog_critical, and the time without activity with check_idle (options
of the configuration, see dd_options(5)).  A queue depth that cannot be asked
is a WARNING, and so is a retry count higher than at the previous check (kept
in the configuration's state directory).  3 (UNKNOWN) is left for a check that
could not run at all.  With --json the same findings are one JSON object (dd_ctl(8),
CHECK AS JSON), for a monitoring system that reads structure rather than a line.
"""
import json

from dd.store import metrics
from dd.admin.ctl import selection, survey
from dd.core.errors import CheckStatus, DDError
from dd.store.state import ConfigState

HELP = "one-line health summary with perfdata for Nagios-style monitoring; exits 0, 1 or 2"


def add_parser(subparsers):
    parser = selection.add_verb(subparsers, "check", HELP, run)
    parser.add_argument("--json", action="store_true", help="print JSON (see dd_ctl(8))")


def run(args, env):
    try:
        everything = survey.survey(selection.select(env, args.configurations), env)
    except DDError as error:
        if args.json:
            _print_json(env, CheckStatus.UNKNOWN, f"{error}", [], [])
        else:
            print(f"DD UNKNOWN - {error}", file=env.stdout)
        return CheckStatus.UNKNOWN
    now = env.clock()
    findings = []
    for facts in everything:
        previous = _previous_retries(facts, env, now)
        findings += [(status, f"{facts.component}/{facts.name}", text)
                     for status, text in problems(facts, now, previous)]
    status = max((s for s, _, _ in findings), default=CheckStatus.OK)
    running = sum(f.running for f in everything)
    expected = sum(f.expected for f in everything)
    summary = f"{len(everything)} configurations, {running}/{expected} instances"
    worst_first = sorted(findings, key=lambda finding: -finding[0])
    if args.json:
        _print_json(env, status, summary, worst_first, everything)
        return status
    details = "".join(f"; {where}: {text}" for _, where, text in worst_first)
    print(f"DD {status.name} - {summary}{details} | {' '.join(map(_perf_text, perfdata(everything)))}", file=env.stdout)
    return status


def _print_json(env, status, summary, findings, everything):
    """The check as one object: the same status, findings and figures as the Nagios line."""
    record = {
        "status": int(status), "state": status.name, "time": env.clock(), "summary": summary,
        "findings": [{"status": int(s), "state": s.name, "configuration": where, "problem": text}
                     for s, where, text in findings],
        "perfdata": [dict(zip(("label", "value", "warning", "critical", "min"), item))
                     for item in perfdata(everything)],
    }
    json.dump(record, env.stdout, indent=2)
    env.stdout.write("\n")


def _previous_retries(facts, env, now):
    """The retry count the previous check saw (None: none did); remember this one."""
    path = ConfigState(env.state_dir, facts.component, facts.name).check_file()
    previous = (metrics.read(path) or {}).get("retries")
    if facts.retries is not None and path.parent.is_dir():
        metrics.write(path, {"time": now, "retries": facts.retries})
    return previous


def problems(facts, now, previous_retries=None):
    """(CheckStatus, phrase) for each thing wrong with one configuration."""
    if facts.error:
        yield CheckStatus.CRITICAL, f"does not load: {facts.error}"
        return
    if facts.state == "stopped":
        yield CheckStatus.WARNING, "stopped"  # and its queue may be filling: look on
    elif facts.running < facts.expected:
        dead = f" (dead: {', '.join(map(str, facts.dead))})" if facts.dead else ""
        yield CheckStatus.CRITICAL, f"{facts.running}/{facts.expected} instances{dead}"
    cfg = facts.cfg
    if facts.queue and facts.queue_depth is None:
        yield CheckStatus.WARNING, f"depth of queue {facts.queue} unknown (broker unreachable?)"
    elif facts.queue_depth is not None:
        if facts.queue_depth > cfg.check_backlog_critical:
            yield CheckStatus.CRITICAL, f"backlog {facts.queue_depth} > {cfg.check_backlog_critical}"
        elif facts.queue_depth > cfg.check_backlog:
            yield CheckStatus.WARNING, f"backlog {facts.queue_depth} > {cfg.check_backlog}"
    if facts.retries is not None and previous_retries is not None and facts.retries > previous_retries:
        yield CheckStatus.WARNING, f"retries growing: {previous_retries} -> {facts.retries}"
    idle = _idle(facts, now)
    if cfg.check_idle and facts.running and idle is not None and idle > cfg.check_idle:
        yield CheckStatus.WARNING, f"no activity for {idle:.0f} s (check_idle {cfg.check_idle:g} s)"


def _idle(facts, now):
    since = facts.last_activity or facts.started
    return None if since is None else max(now - since, 0.0)


def perfdata(everything):
    """(label, value, warning, critical, min) of each figure, None where there is no threshold:
    totals, then each queue's backlog."""
    running = sum(f.running for f in everything)
    dead = sum(len(f.dead) for f in everything)
    errors = sum(f.errors_last_hour for f in everything)
    retries = sum(f.retries or 0 for f in everything)
    items = [("instances", running, None, None, 0), ("dead", dead, None, 1, 0),
             ("errors_last_hour", errors, None, None, 0), ("retries", retries, None, None, 0)]
    for facts in everything:
        if facts.queue_depth is not None:
            cfg = facts.cfg
            items.append((f"backlog_{facts.component}/{facts.name}", facts.queue_depth,
                          cfg.check_backlog, cfg.check_backlog_critical, 0))
    return items


def _perf_text(item):
    """Nagios perfdata: label=value;warn;crit;min."""
    label, *figures = item
    return f"{label}=" + ";".join("" if figure is None else str(figure) for figure in figures)
