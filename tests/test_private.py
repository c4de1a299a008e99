"""Private transfers, Alice to Bob: a source names the readers of what it posts; the
pump stores it under a password-protected directory of its data server, whose passwords
are the readers' own data server passwords.  (A live pump is attacked in
test_pump_boundaries.py; private data crosses three pumps in test_three_pumps.py.)"""
import json

import pytest
import bcrypt

from dd.core import formats
from dd.pump import private
from dd.core.credentials import Credentials, Url
from dd.core.errors import NoticeError
from dd.core.notice import Notice, Op, now


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


def test_the_data_server_asks_readers_for_their_data_server_password_never_their_broker_one(tmp_path, caplog):
    server = Url.parse("https://pump.example:8443/")
    credentials = Credentials([Url.parse(line) for line in (
        "amqps://bob:broker-pw@pump.example/", "https://bob:data-pw@pump.example:8443/",
        "amqps://eve:same-pw@pump.example/", "https://eve:same-pw@pump.example:8443/",
        "amqps://carl:carl-pw@pump.example/", "https://bob:other@elsewhere.example:8443/")])
    htpasswd = private.Htpasswd(tmp_path, credentials, server, relay_readers=["feeder"])
    assert htpasswd.allow(["eve", "bob", "carl"]) == "bob,carl,eve"
    lines = (tmp_path / "bob,carl,eve").read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["bob"]
    assert bcrypt.checkpw(b"data-pw", lines[0].split(":", 1)[1].encode())
    assert (tmp_path / "bob,carl,eve").stat().st_mode & 0o777 == 0o640
    assert "password of eve is also its broker password" in caplog.text
    assert "no data server password for carl" in caplog.text and "no data server password for feeder" in caplog.text


def test_private_areas_are_read_from_urls():
    assert private.readers_in("/private/bob,eve/ann/x") == ["bob", "eve"]
    assert private.readers_in("/data/private/bob/x") == ["bob"]
    assert private.readers_in("/ann/private.txt") == [] and private.readers_in("/private/") == []
