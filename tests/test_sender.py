"""dd_sender: dd_post → RabbitMQ → nginx → dd_sender → sshd (SFTP) and pyftpdlib (FTP), with real
processes: the destination is byte-identical, nothing stays under a temporary name, and no notice
writes outside the destination."""
import contextlib
import hashlib
import json
import os
import urllib.parse

import amqp
import pytest

from dd.core.credentials import Url
from dd.core.errors import ConfigError, PathError
from dd.delivery import send
from dd.transfer import is_temporary_name
from tests.support.pump import compare, manifest, wait_for
from tests.test_hostile import notice
from tests.test_mirror import make_tree

BIG = 50 << 20


@pytest.fixture
def sender(pump):
    pump.component = "sender"
    return pump


def sender_config(pump, name, destination, extra=""):
    path = pump.base / "config" / "sender" / f"{name}.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"broker {pump.broker_url}\nexchange {pump.exchange}\ndestination {destination}\n{extra}\n")
    pump.command("sender", "declare", name, check=True)
    return name


def sftp_destination(pump, sshd_server, name):
    """(destination URL, its directory, the sender's options) of a fresh directory on sshd."""
    directory = sshd_server.root / pump.base.name / name
    directory.parent.mkdir(parents=True, exist_ok=True)
    options = f"known_hosts {sshd_server.known_hosts}\nsftp_key {sshd_server.key_file}\n"
    return f"{sshd_server.url}/{urllib.parse.quote(pump.base.name)}/{name}", directory, options


def ftp_destination(pump, ftp_server, name):
    """The same on the FTP server, its password in credentials.conf."""
    credentials = pump.base / "config" / "credentials.conf"
    credentials.parent.mkdir(parents=True, exist_ok=True)
    url = Url.parse(ftp_server.url)
    credentials.write_text(f"ftp://{url.user}:{ftp_server.password}@{url.netloc}/\n")
    credentials.chmod(0o600)
    return f"{ftp_server.url}{urllib.parse.quote(pump.base.name)}/{name}", ftp_server.root / pump.base.name / name


@contextlib.contextmanager
def announcements(pump, exchange):
    """A queue bound to `exchange`; yields a function giving the body of the next notice, or None."""
    url = Url.parse(pump.broker_url)
    connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user, password=url.password,
                                 virtual_host=url.path.lstrip("/"))
    connection.connect()
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        queue, _, _ = channel.queue_declare("", exclusive=True)
        channel.queue_bind(queue, exchange, "#")

        def received():
            message = channel.basic_get(queue, no_ack=True)
            return None if message is None else message.body
        yield received
    finally:
        connection.close()


def temporaries(root):
    return [p for p in root.rglob("*") if is_temporary_name(p.name)]


def test_a_300_file_tree_with_a_big_file_is_pushed_byte_identical_over_sftp_and_ftp(sender, sshd_server,
                                                                                   ftp_server):
    make_tree(sender.src, count=299)
    (sender.src / "big file #1.bin").write_bytes(os.urandom(BIG))
    expected = manifest(sender.src)
    assert len(expected) == 300
    sftp_url, sftp_dir, sftp_options = sftp_destination(sender, sshd_server, "sftp dest")
    ftp_url, ftp_dir = ftp_destination(sender, ftp_server, "ftp dest")
    sender_config(sender, "to_sftp", sftp_url, sftp_options + "verify_sent on")
    sender_config(sender, "to_ftp", ftp_url)
    posted = sender.post(sender.src)
    assert "300 announced, 0 not announced" in posted.stderr
    # Both at once: one post, two queues.
    running = [sender.foreground("to_sftp"), sender.foreground("to_ftp")]

    def arrived():
        return all(compare(expected, manifest(d)) == ([], [], []) for d in (sftp_dir, ftp_dir))
    done = wait_for(arrived, timeout=180, interval=0.5)
    missing_then = {d.name: compare(expected, manifest(d))[:2] for d in (sftp_dir, ftp_dir)} if not done else {}
    assert wait_for(lambda: sender.queue_depth("to_sftp") == 0 and sender.queue_depth("to_ftp") == 0)
    logs = [sender.stop(process) for process in running]
    for (status, log), where in zip(logs, (sftp_dir, ftp_dir)):
        assert compare(expected, manifest(where)) == ([], [], []), log[-3000:]
        assert status == 0 and "Traceback" not in log
        assert temporaries(where) == []
        assert log.count("201 sent") == 300, log[-3000:]
    if not done:
        # Everything came, but late: what was missing at the deadline, and all the senders said of it.
        names = {os.path.basename(path) for lists in missing_then.values() for part in lists for path in part}
        said = [line for _, log in logs for line in log.splitlines()
                if any(name in line for name in names) or "WARNING" in line or "ERROR" in line]
        pytest.fail(f"late at 180 s: {missing_then}\n" + "\n".join(said[-100:]), pytrace=False)
    assert "201 sent and read back" in logs[0][1] and "read back" not in logs[1][1]


def test_delete_and_rename_notices_act_on_the_destination(sender, sshd_server):
    destination, directory, options = sftp_destination(sender, sshd_server, "dest")
    sender_config(sender, "to_sftp", destination, options)
    for name in ("gone.txt", "old.txt"):
        (sender.src / name).write_text(name)
    sender.post(sender.src / "gone.txt", sender.src / "old.txt")
    process = sender.foreground("to_sftp")
    assert wait_for(lambda: (directory / "gone.txt").exists() and (directory / "old.txt").exists())
    os.rename(sender.src / "old.txt", sender.src / "new.txt")
    sender.post(sender.src / "new.txt", rename=sender.src / "old.txt")
    sender.post(sender.src / "gone.txt", "--delete")
    assert wait_for(lambda: sorted(p.name for p in directory.iterdir()) == ["new.txt"])
    assert wait_for(lambda: sender.queue_depth("to_sftp") == 0)
    status, log = sender.stop(process)
    assert (directory / "new.txt").read_text() == "old.txt"
    assert "renamed from old.txt" in log and "201 deleted" in log, log[-3000:]


def test_announces_what_it_sent_from_the_destination(sender, tmp_path):
    """post_base_url of the destination: a pump can feed the next by push (here a file: one)."""
    directory = tmp_path / "pushed"
    (sender.src / "sub").mkdir()
    (sender.src / "sub" / "a.txt").write_text("hello")
    sender_config(sender, "push", f"file:{directory}",
                  f"post_broker {sender.broker_url}\npost_exchange {sender.exchange}_next\n"
                  "post_base_url http://next.example/data/\ndirectory in")
    with announcements(sender, f"{sender.exchange}_next") as received:
        sender.post(sender.src / "sub" / "a.txt")
        process = sender.foreground("push")
        assert wait_for(lambda: (directory / "in" / "sub" / "a.txt").exists())
        assert wait_for(lambda: sender.queue_depth("push") == 0)
        status, log = sender.stop(process)
        bodies = []
        assert wait_for(lambda: bodies.append(received()) or bodies[-1] is not None)
        announced = json.loads(bodies[-1])
    assert (directory / "in" / "sub" / "a.txt").read_text() == "hello"
    assert "Traceback" not in log and status == 0
    assert (announced["base_url"], announced["rel_path"]) == ("http://next.example/data/", "in/sub/a.txt")
    assert announced["checksum"]["value"] == hashlib.sha512(b"hello").hexdigest()


@pytest.mark.parametrize("rel_path", ["../outside/victim.txt", "a/../../outside/victim.txt",
                                      "%2e%2e/outside/victim.txt", "/outside/victim.txt", "a//b.txt"])
def test_a_notice_that_would_leave_the_destination_is_refused(sender, sshd_server, rel_path):
    destination, directory, options = sftp_destination(sender, sshd_server, "dest")
    outside = directory.parent / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("original")
    (sender.src / "good.txt").write_bytes(b"good")
    sender_config(sender, "to_sftp", destination, options)
    sender.publish_raw(notice(sender, rel_path, b"evil"))
    sender.publish_raw(notice(sender, "good.txt", b"good"))
    process = sender.foreground("to_sftp")
    assert wait_for(lambda: (directory / "good.txt").exists() and sender.queue_depth("to_sftp") == 0)
    status, log = sender.stop(process)
    assert (outside / "victim.txt").read_text() == "original"
    assert sorted(str(p.relative_to(directory.parent)) for p in directory.parent.rglob("*")) == \
        ["dest", "dest/good.txt", "outside", "outside/victim.txt"]
    assert status == 0 and "Traceback" not in log
    assert " 40" in log and ("dot-dot" in log or "absolute" in log or "empty-component" in log), log[-2000:]


def test_the_destination_confines_every_path():
    destination = send.Destination(Url.parse("sftp://u@h/srv/dest"))
    assert destination.path("a b/#1.txt") == "/srv/dest/a b/#1.txt"
    assert destination.url_of("/srv/dest/a b/#1.txt") == "sftp://u@h/srv/dest/a%20b/%231.txt"
    for hostile in ("..", "../x", "a/../../x", "/etc/passwd", "a//b", "./a", "%2e%2e/x", "a/\uff0e\uff0e/x",
                    "a\\..\\..\\x", "a\nb"):
        with pytest.raises(PathError):
            destination.path(hostile)
    assert send.Destination(Url.parse("ftp://u@h/")).path("x") == "/x"


def test_a_sender_directory_is_relative_to_the_destination():
    assert send.below_destination(".") == []
    assert send.below_destination("in/coming") == ["in", "coming"]
    for bad in ("/abs", "../up", "a/../b"):
        with pytest.raises(ConfigError):
            send.below_destination(bad)


def test_a_sender_without_destination_or_with_a_bad_one_says_so_in_one_line(sender):
    name = sender_config(sender, "nowhere", "sftp://u@127.0.0.1/x")
    (sender.base / "config" / "sender" / f"{name}.conf").write_text(f"broker {sender.broker_url}\n")
    result = sender.command("sender", "foreground", name)
    assert result.returncode != 0
    assert "dd_sender needs destination" in result.stderr and "Traceback" not in result.stderr
    result = sender.command("sender", "foreground", name, "--destination=http://h/x")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "destination" in result.stderr
