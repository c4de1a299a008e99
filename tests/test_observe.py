"""What a user and a log stack see of a running flow: JSON log lines, refusals said once per
rule, each dd_post error said once, a broker's refusal that names the likely cause."""
import json
import urllib.parse

import pytest

from tests.support.pump import wait_for


def _json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_log_format_json_gives_one_object_a_line_with_the_fields(pump):
    pump.subscriber_config("sub", extra=f"log_format json\ndirectory {pump.dst}\nreject .*\\.tmp\naccept .*")
    process = pump.foreground("sub")
    (pump.src / "kept.txt").write_text("kept")
    (pump.src / "a.tmp").write_text("a")
    (pump.src / "b.tmp").write_text("b")
    pump.post(pump.src)
    assert wait_for(lambda: (pump.dst / "kept.txt").exists())
    status, err = pump.stop(process)
    assert status == 0, err
    lines = _json_lines(err)       # every line parses, or this raises
    assert lines
    for line in lines:
        assert {"time", "level", "component", "configuration", "instance", "message"} <= set(line), line
        assert (line["component"], line["configuration"], line["instance"]) == ("subscribe", "sub", 1)
        assert line["time"].endswith("+00:00") and line["level"] in ("info", "warning", "error")
    delivered = [line for line in lines if line.get("rel_path") == "kept.txt"]
    assert delivered and "delivered" in delivered[0]["message"]
    # A reject line's first refusal is said at info with its rule; the next ones only at debug.
    refused = [line for line in lines if line["message"].startswith("not accepted")]
    assert len(refused) == 1, refused
    assert refused[0]["level"] == "info" and refused[0]["rel_path"].endswith(".tmp")
    assert "reject .*\\.tmp (" in refused[0]["message"]


def test_a_rule_refusing_notices_is_said_once_at_info(pump):
    pump.subscriber_config("sub", extra=f"directory {pump.dst}\naccept .*\\.txt")
    process = pump.foreground("sub")
    for name in ("one.txt", "x.dat", "y.dat", "z.dat"):
        (pump.src / name).write_text(name)
    pump.post(pump.src)
    assert wait_for(lambda: (pump.dst / "one.txt").exists())
    _, err = pump.stop(process)
    refused = [line for line in err.splitlines() if "not accepted" in line]
    assert len(refused) == 1 and "[INFO]" in refused[0], err
    assert "no accept line matches it and accept_unmatched is off" in refused[0]


def test_dd_post_says_each_error_once(pump):
    (pump.src / "here.txt").write_text("here")
    result = pump.post(pump.src / "here.txt", pump.src / "missing.txt", check=False)
    assert result.returncode == 1
    assert result.stderr.count("missing.txt") == 1, result.stderr
    assert "1 announced, 1 not announced" in result.stderr


@pytest.mark.broker
def test_a_virtual_host_refused_may_also_not_exist(pump):
    scheme, netloc = urllib.parse.urlsplit(pump.broker_url)[:2]
    url = f"{scheme}://{netloc}/dd-no-such-vhost"
    (pump.src / "one.txt").write_text("one")
    result = pump.command("post", f"--post_broker={url}", f"--post_exchange={pump.exchange}",
                          f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}", pump.src)
    assert result.returncode != 0
    assert "may not use virtual host 'dd-no-such-vhost', or it does not exist" in result.stderr, result.stderr
    assert result.stderr.count("may not use virtual host") == 1 and "Traceback" not in result.stderr
