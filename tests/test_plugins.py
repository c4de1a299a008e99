"""Validation plugins (dd_plugins(7)): on_notice and on_file python:... accept, refuse and fail
on chosen notices and files, and the flow goes on; a plugin that does not load is a one-line
configuration error.  dd_subscribe, against the real broker and nginx."""
import textwrap
from pathlib import Path

import pytest

from dd.core.notice import Checksum, Notice, Op, now
from dd.delivery import plugins as plugins_module
from dd.delivery.hooks import HookRejected
from dd.store import retry
from tests.support.pump import manifest, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "config" / "plugins"
#: The plugins, a module in the configuration directory's plugins/ (searched after sys.path).
CHECKS = '''
import dataclasses
import logging
import os

from dd.delivery.plugins import Reject

log = logging.getLogger("dd.plugin.ddcheck")
CALLS = os.path.join(os.path.dirname(__file__), "calls")


def notice(n):
    name = n.rel_path
    if name.startswith("small"):
        return f"too small: {n.size} bytes"
    if name.startswith("deny"):
        return Reject("denied by policy")
    if name.startswith("boom"):
        raise ValueError("cannot judge " + name)
    if name.startswith("rename"):
        return dataclasses.replace(n, rel_path="renamed/" + name)
    if name.startswith("escape"):
        return dataclasses.replace(n, rel_path="../../" + name)
    log.info("accepted %s", name)
    return None


def file(path, n):
    with open(CALLS, "a") as calls:
        calls.write(f"{path} {n.rel_path} {os.path.getsize(path)}\\n")
    name = os.path.basename(path)
    if name.startswith("bad"):
        return Reject("not what I expected")
    if name.startswith("boom"):
        raise RuntimeError("broken check")
    if name.startswith("flaky") and sum("flaky" in line for line in open(CALLS)) == 1:
        raise OSError("the archive is down")
    return True


not_a_function = 42
'''


def plugins(pump):
    directory = pump.base / "config" / "plugins"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ddcheck.py").write_text(textwrap.dedent(CHECKS))
    return directory / "calls"


def calls(path):
    return path.read_text().splitlines() if path.exists() else []


def run(pump, extra, names, until):
    """Post `names` (each file holding its name), run the subscriber until `until()` and the
    queue is drained; its log."""
    plugins(pump)
    for name in names:
        (pump.src / name).write_text(name)
    pump.subscriber_config(extra=extra)
    pump.post(*(pump.src / name for name in names))
    subscriber = pump.foreground()
    try:
        assert wait_for(lambda: until() and pump.queue_depth() == 0, timeout=60)
    finally:
        _, log = pump.stop(subscriber)
    return log


def line_about(log, text):
    found = [line for line in log.splitlines() if text in line]
    assert len(found) == 1, f"{text!r} in {found or log}"
    return found[0]


def test_on_notice_accepts_refuses_changes_and_fails_and_the_flow_goes_on(pump):
    names = ["keep.txt", "small.txt", "deny.txt", "boom.txt", "rename.txt", "escape.txt", "last.txt"]
    log = run(pump, "on_notice python:ddcheck:notice\nretry_delay 1h", names,
              until=lambda: (pump.dst / "last.txt").exists() and (pump.dst / "renamed" / "rename.txt").exists())
    assert manifest(pump.dst).keys() == {"keep.txt", "last.txt", "renamed/rename.txt"}
    assert (pump.dst / "renamed" / "rename.txt").read_text() == "rename.txt"   # fetched from where it was
    assert "accepted keep.txt" in log and "accepted last.txt" in log           # the plugin's own logger
    assert line_about(log, "small.txt").endswith(
        "403 on_notice ddcheck:notice refused small.txt: too small: 9 bytes [on_notice]")
    assert line_about(log, "deny.txt").endswith(
        "403 on_notice ddcheck:notice refused deny.txt: denied by policy [on_notice]")
    assert line_about(log, "boom.txt").endswith(
        "500 on_notice ddcheck:notice raised ValueError: cannot judge boom.txt for boom.txt; "
        "kept for retry [on_notice]")
    assert "Traceback" not in log      # at debug level only
    escaped = line_about(log, "escape.txt")
    assert " 403 " in escaped and "(as on_notice ddcheck:notice changed it)" in escaped
    assert not (pump.base.parent / "escape.txt").exists() and not (pump.base / "escape.txt").exists()


def test_on_file_accepts_refuses_and_fails_and_a_failure_is_logged_the_file_kept(pump):
    names = ["good.txt", "bad.txt", "boom.txt", "next.txt"]
    record = plugins(pump)
    log = run(pump, "on_file python:ddcheck:file", names, until=lambda: len(calls(record)) == 4)
    assert sorted(calls(record)) == sorted(f"{pump.dst / n} {n} {len(n)}" for n in names)
    assert manifest(pump.dst).keys() == {"good.txt", "boom.txt", "next.txt"}      # bad.txt removed
    assert line_about(log, "bad.txt").endswith(
        f"403 on_file ddcheck:file refused {pump.dst / 'bad.txt'}: not what I expected; removed [on_file]")
    # on_file_failure log: the failure is logged, the delivery stands.
    assert (f"on_file ddcheck:file raised RuntimeError: broken check for {pump.dst / 'boom.txt'} "
            "(run with log_level debug for its traceback)") in log
    assert log.count("201 delivered") == 3
    assert "Traceback" not in log


def test_with_on_file_failure_retry_a_plugin_that_raised_runs_again(pump):
    record = plugins(pump)
    store = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"
    log = run(pump, "on_file python:ddcheck:file\non_file_failure retry\nretry_delay 1s", ["flaky.txt"],
              until=lambda: len(calls(record)) == 2 and retry.waiting(store) == 0)
    assert (f"500 on_file ddcheck:file raised OSError: the archive is down for {pump.dst / 'flaky.txt'} "
            "(run with log_level debug for its traceback); kept for retry [on_file]") in log
    assert "201 in place; on_file had not completed, ran now" in log
    assert (pump.dst / "flaky.txt").read_text() == "flaky.txt"


@pytest.mark.parametrize("line, args, error", [
    ("on_notice python:nosuch.module:f", [],
     "on_notice python:nosuch.module:f: no module nosuch (put nosuch/module.py on PYTHONPATH or in {plugins})"),
    ("on_notice python:ddcheck:missing", [],
     "on_notice python:ddcheck:missing: ddcheck has no missing (define missing in {plugins}/ddcheck.py)"),
    ("on_file python:ddcheck:not_a_function", [],
     "on_file python:ddcheck:not_a_function: not_a_function is a int, not a function (name a function)"),
    ("", ["--on_notice", "ddcheck.notice"],
     "command line: bad on_notice value 'ddcheck.notice' (expected python:package.module:function, "
     "a function dd_plugins(7) describes)"),
])
@pytest.mark.parametrize("action", ["foreground", "start", "declare"])
def test_a_plugin_that_does_not_load_is_a_one_line_configuration_error(pump, line, args, error, action):
    plugins(pump)
    pump.subscriber_config()
    with open(pump.base / "config" / "subscribe" / "sub.conf", "a") as conf:
        conf.write(line + "\n")
    # `start` says so itself, before it starts an instance that would only log it.
    result = pump.command("subscribe", action, "sub", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1] == "dd_subscribe: " + error.format(plugins=pump.base / "config" / "plugins")


# -- the examples of config/plugins, as dd loads them -------------------------------------


def example(option, spec):
    return plugins_module.load(option, spec, EXAMPLES)


def a_notice(**fields):
    fields = {"pubtime": now(), "base_url": "https://pump.example.com/", "rel_path": "obs/a.grib2",
              "size": 100, "checksum": Checksum("sha256", "ab"), **fields}
    return Notice(**fields)


def test_reject_small_refuses_small_files_and_lets_the_rest_pass():
    check = plugins_module.NoticeCheck(example("on_notice", "python:reject_small:check"))
    assert check(a_notice(size=10)) == "on_notice reject_small:check refused obs/a.grib2: 10 bytes, smaller than 64"
    assert check(a_notice(size=64)) is None
    assert check(a_notice(op=Op.DELETE, size=None, checksum=None)) is None


@pytest.mark.parametrize("content, refusal", [
    (b"GRIB" + b"\0" * 20 + b"7777", None),
    (b"<html>not found</html>", "does not start with GRIB but b'<htm'"),
    (b"GRIB" + b"\0" * 20, "does not end with 7777: truncated?"),
    (b"GR", "does not start with GRIB but b'GR'"),
])
def test_check_grib_refuses_what_is_not_grib(tmp_path, content, refusal):
    check = plugins_module.FileCheck(example("on_file", "python:check_grib:check"))
    path = tmp_path / "a.grib2"
    path.write_bytes(content)
    if refusal is None:
        check.run(str(path), a_notice())
    else:
        with pytest.raises(HookRejected) as refused:
            check.run(str(path), a_notice())
        assert str(refused.value) == f"on_file check_grib:check refused {path}: {refusal}"
