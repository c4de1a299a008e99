"""Private transfers, Alice to Bob: a source names the readers of what it posts; the
pump stores it under a password-protected directory of its data server; Bob fetches it
with his own credentials, Eve cannot."""
import json
import subprocess
import sys

import pytest
import urllib3

from dd import formats
from dd.errors import NoticeError
from dd.notice import Notice, Op, now
from tests.pump import wait_for
from tests.test_sara import relay  # noqa: F401 - the fixture

PASSWORDS = {"bob": "bob-pw-1", "eve": "eve-pw-2"}


def test_readers_travel_in_dd_notices_only_and_must_be_user_names():
    notice = Notice(pubtime=now(), base_url="http://x/", rel_path="a", op=Op.DELETE, readers=["bob", "carol"])
    message = formats.encode(notice)
    assert json.loads(message.body)["readers"] == ["bob", "carol"]
    assert formats.decode(message.body).readers == ["bob", "carol"]
    for fmt in ("sr_v02", "sr_v03"):
        with pytest.raises(NoticeError, match="cannot be posted in"):
            formats.encode(notice, fmt)
    body = json.loads(message.body)
    body["readers"] = ["bob/../eve"]
    with pytest.raises(NoticeError) as refused:
        formats.decode(json.dumps(body).encode())
    assert refused.value.rule == "readers"


#: A pool of its own: urllib3.request() is 2.x only, and Debian 12 ships 1.26.
HTTP = urllib3.PoolManager()


def get(url, user=None):
    headers = urllib3.make_headers(basic_auth=f"{user}:{PASSWORDS[user]}") if user else {}
    response = HTTP.request("GET", url, headers=headers)
    return response.status, response.data


def user_environment(pump, who, exchange):
    """`who`'s own configuration directory: a subscription to the pump, and a
    credentials.conf holding only `who`'s password for its data server."""
    config = pump.base / f"config-{who}"
    (config / "subscribe").mkdir(parents=True)
    (config / "credentials.conf").write_text(f"http://{who}:{PASSWORDS[who]}@127.0.0.1:{pump.data_port}/\n")
    (config / "credentials.conf").chmod(0o600)
    (config / "subscribe" / "pump.conf").write_text(
        f"broker {pump.broker_url}\nexchange {exchange}\ndirectory {pump.base / who}\n")
    env = dict(pump.env, DD_CONFIG_DIR=str(config), DD_STATE_DIR=str(pump.base / f"state-{who}"))
    subprocess.run([sys.executable, "-m", "dd.cli.main", "subscribe", "declare", "pump"], env=env, check=True,
                   capture_output=True)
    return env


def test_only_readers_fetch_private_data_from_the_pump(pump, relay):
    # The pump knows its users' passwords: its data server asks for them.
    credentials = pump.base / "config" / "credentials.conf"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text("".join(f"amqp://{u}:{p}@127.0.0.1/\n" for u, p in PASSWORDS.items()))
    credentials.chmod(0o600)
    (pump.src / "secret.txt").write_text("for bob only")
    (pump.src / "public.txt").write_text("for all")
    relay.config("pump", pump.exchange)
    pump.data_port = relay.data_port
    environments = {who: user_environment(pump, who, relay.post_exchange) for who in PASSWORDS}
    pump.post(pump.src / "secret.txt", readers="bob")
    pump.post(pump.src / "public.txt")
    process = relay.foreground("pump")
    subscribers = {who: subprocess.Popen([sys.executable, "-m", "dd.cli.main", "subscribe", "foreground", "pump"],
                                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for who, env in environments.items()}
    pump.processes.extend(subscribers.values())
    arrived = wait_for(lambda: (pump.base / "bob" / "secret.txt").exists()
                       and (pump.base / "eve" / "public.txt").exists() and relay.downstream.count() >= 2, timeout=30)
    notices = {n.rel_path: n for n in relay.downstream.notices()}
    secret, public = notices.get("secret.txt"), notices.get("public.txt")
    served = secret and public and [get(secret.url)[0], get(secret.url, "eve")[0], get(secret.url, "bob"),
                                    get(public.url)]
    logs = {who: pump.stop(subscriber)[1] for who, subscriber in subscribers.items()}
    relay_log = relay.stop(process)
    assert arrived, (logs, relay_log[-2000:])
    assert secret.readers == ["bob"] and secret.base_url.endswith("/private/bob/")
    assert served == [401, 401, (200, b"for bob only"), (200, b"for all")]
    assert (relay.tree / "private" / "bob" / "secret.txt").read_text() == "for bob only"
    assert (pump.base / "bob" / "secret.txt").read_text() == "for bob only"
    assert not (pump.base / "eve" / "secret.txt").exists()
    assert "403" in logs["eve"] and "[denied]" in logs["eve"] and "Traceback" not in logs["eve"]
