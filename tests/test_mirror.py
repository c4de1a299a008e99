"""dd_post → RabbitMQ → nginx → dd_subscribe, with real processes: the tree arrives whole."""
import os
import random
import ssl
import time

from tests.support.brokers import BrokerRelay
from tests.support.pump import compare, manifest, wait_for
from tests.support.servers import self_signed

NAMES = ["plain.txt", "with space.txt", "hash#tag.dat", "star*.bin", "dots.in.name", "%41percent",
         "été ünïcødé.txt", "日本語.txt", "question?.txt", "a'quote\".txt"]


def make_tree(root, count=300, seed=7):
    """A tree with spaces, unicode, '#', deep directories and empty files."""
    rng = random.Random(seed)
    for i in range(count):
        depth = rng.randrange(0, 8)
        directories = [f"d{rng.randrange(4)}{rng.choice(['', ' x', '#', '.y', 'é'])}" for _ in range(depth)]
        name = f"{i:03d}_{rng.choice(NAMES)}"
        path = root.joinpath(*directories, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 0 if i % 10 == 0 else rng.choice([1, 100, 4096, 70000])
        path.write_bytes(rng.randbytes(size))
    return manifest(root)


def mirrored(pump, expected):
    return lambda: compare(expected, manifest(pump.dst)) == ([], [], [])


def test_tree_of_300_files_mirrors_byte_identical(pump):
    expected = make_tree(pump.src)
    assert len(expected) == 300
    pump.subscriber_config()
    posted = pump.post(pump.src)
    assert posted.returncode == 0, posted.stderr
    assert "300 announced, 0 not announced" in posted.stderr
    subscriber = pump.foreground()
    arrived = wait_for(mirrored(pump, expected), timeout=60)
    status, log = pump.stop(subscriber)
    lost, invented, changed = compare(expected, manifest(pump.dst))
    assert (lost, invented, changed) == ([], [], []), log[-2000:]
    assert arrived
    assert status == 0
    assert "Traceback" not in log
    # times and modes come along
    sample = next(p for p in pump.src.rglob("*") if p.is_file())
    copy = pump.dst / sample.relative_to(pump.src)
    assert int(copy.stat().st_mtime) == int(sample.stat().st_mtime)
    assert pump.queue_depth() == 0


def test_second_delivery_of_same_content_is_not_downloaded_again(pump):
    (pump.src / "a.txt").write_text("same")
    pump.subscriber_config()
    pump.post(pump.src / "a.txt")
    pump.post(pump.src / "a.txt")
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "a.txt").exists())
    assert wait_for(lambda: pump.queue_depth() == 0)
    _, log = pump.stop(subscriber)
    assert log.count("201 delivered") == 1
    assert log.count("304 already up to date") == 1


def test_a_notice_seen_within_nodupe_ttl_is_skipped_unless_the_file_was_deleted_since(pump):
    (pump.src / "a.txt").write_text("same")
    pump.subscriber_config(extra="nodupe_ttl 5m")
    pump.post(pump.src / "a.txt")
    pump.post(pump.src / "a.txt")
    pump.post(pump.src / "a.txt", "--delete")
    pump.post(pump.src / "a.txt")
    subscriber = pump.foreground()
    assert wait_for(lambda: pump.queue_depth() == 0)
    assert wait_for(lambda: (pump.dst / "a.txt").exists())
    _, log = pump.stop(subscriber)
    assert log.count("201 delivered") == 2, log
    assert log.count("duplicate (seen within nodupe_ttl): a.txt") == 1
    assert log.count("201 deleted") == 1


def test_on_file_runs_once_per_file_with_the_notice_in_its_environment(pump):
    record = pump.base / "hook.log"
    hook = pump.base / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1|$DD_REL_PATH|$DD_SIZE|$DD_CHECKSUM" >> {record}\n')
    hook.chmod(0o755)
    for name in ("one.txt", "two words.txt"):
        (pump.src / name).write_text(name)
    pump.subscriber_config(extra=f"on_file {hook}")
    pump.post(pump.src, checksum="md5")
    subscriber = pump.foreground()
    assert wait_for(lambda: record.exists() and len(record.read_text().splitlines()) == 2)
    pump.stop(subscriber)
    lines = sorted(record.read_text().splitlines())
    assert lines[0].startswith(f"{pump.dst / 'one.txt'}|one.txt|7|md5:")
    assert lines[1].startswith(f"{pump.dst / 'two words.txt'}|two words.txt|13|md5:")


def test_accept_reject_directory_and_strip(pump):
    (pump.src / "keep" / "deep").mkdir(parents=True)
    (pump.src / "keep" / "deep" / "a.grib").write_text("a")
    (pump.src / "keep" / "b.txt").write_text("b")
    (pump.src / "skip.grib").write_text("s")
    other = pump.base / "gribs"
    pump.subscriber_config(extra=f"directory {other}\nstrip 1\naccept keep/.*\\.grib\nreject .*\\.grib\n"
                                 "mirror off")
    pump.post(pump.src)
    subscriber = pump.foreground()
    assert wait_for(lambda: pump.queue_depth() == 0 and (other / "deep" / "a.grib").exists())
    pump.stop(subscriber)
    assert manifest(other).keys() == {"deep/a.grib"}
    # b.txt is unmatched and accept_unmatched is off once there are accept lines
    assert not pump.dst.exists() or manifest(pump.dst) == {}


def test_delete_link_and_rename_act_inside_the_tree(pump):
    (pump.src / "old.txt").write_text("content")
    pump.subscriber_config()
    pump.post(pump.src / "old.txt")
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "old.txt").exists())
    os.symlink("old.txt", pump.src / "alias")
    pump.post(pump.src / "alias")
    assert wait_for(lambda: (pump.dst / "alias").is_symlink())
    assert os.readlink(pump.dst / "alias") == "old.txt"
    (pump.src / "old.txt").unlink()
    pump.post(pump.src / "old.txt", "--delete")
    assert wait_for(lambda: not (pump.dst / "old.txt").exists())
    pump.stop(subscriber)


def test_dd_post_announces_renames_of_files_and_directories(pump):
    (pump.src / "d" / "deep").mkdir(parents=True)
    for name, text in (("one.txt", "one"), ("d/two.txt", "two"), ("d/deep/three.txt", "three")):
        (pump.src / name).write_text(text)
    pump.subscriber_config()
    pump.post(pump.src)
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "d" / "deep" / "three.txt").exists())
    (pump.src / "moved").mkdir()
    os.rename(pump.src / "one.txt", pump.src / "moved" / "first.txt")
    os.rename(pump.src / "d", pump.src / "e")
    pump.post(pump.src / "moved" / "first.txt", "--rename", pump.src / "one.txt")
    pump.post(pump.src / "e", "--rename", pump.src / "d")
    assert wait_for(lambda: manifest(pump.dst) == manifest(pump.src)), manifest(pump.dst)
    _, log = pump.stop(subscriber)
    # Moved where they were, not downloaded again.
    for old in ("one.txt", "d/two.txt", "d/deep/three.txt"):
        assert f"renamed from {old}" in log, log
    assert log.count("201 delivered") == 3 and "Traceback" not in log
    # Only a PATH below post_base_dir, one only, and not a deletion too.
    outside = pump.post(pump.src / "e", "--rename", "/etc/passwd", check=False)
    assert outside.returncode == 1 and "dd_post: not announced: /etc/passwd: /etc/passwd is outside post_base_dir" \
        in outside.stderr, outside.stderr
    two = pump.post(pump.src / "e", pump.src / "moved", "--rename", pump.src / "d", check=False)
    assert two.returncode == 2 and f"--rename {pump.src / 'd'} takes one PATH, its new name, not 2" in two.stderr
    both = pump.post(pump.src / "e", "--rename", pump.src / "d", "--delete", check=False)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr


def test_status_start_stop_follow_lsb_and_instances_share_one_queue(pump):
    for i in range(40):
        (pump.src / f"f{i}").write_text(str(i))
    name = pump.subscriber_config(extra="instances 2")
    assert pump.command("subscribe", "status", name).returncode == 3
    started = pump.command("subscribe", "start", name)
    assert started.returncode == 0, started.stderr
    assert wait_for(lambda: pump.command("subscribe", "status", name).returncode == 0, timeout=10)
    pump.post(pump.src)
    assert wait_for(lambda: len(manifest(pump.dst)) == 40)
    assert pump.command("subscribe", "stop", name).returncode == 0
    assert pump.command("subscribe", "status", name).returncode == 3
    logs = sorted((pump.base / "logs").glob("subscribe_sub_*.log"))
    assert [p.name for p in logs] == ["subscribe_sub_01.log", "subscribe_sub_02.log"]
    delivered = [p.read_text().count("201 delivered") for p in logs]
    assert sum(delivered) == 40


def test_show_never_prints_the_password(pump):
    name = pump.subscriber_config()
    shown = pump.command("subscribe", "show", name)
    assert shown.returncode == 0
    assert "guest@" in shown.stdout and ":guest@" not in shown.stdout


def test_dd_post_with_the_broker_down_exits_non_zero_naming_what_was_not_announced(pump):
    (pump.src / "a.txt").write_text("a")
    from tests.support.servers import free_port
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    result = pump.command("post", f"--post_broker={dead}", f"--post_exchange={pump.exchange}",
                          f"--post_base_url={pump.base_url}", f"--post_base_dir={pump.src}",
                          "--post_timeout=2s", pump.src / "a.txt")
    assert result.returncode == 4
    assert "not announced: a.txt: not confirmed by the broker" in result.stderr
    assert "Traceback" not in result.stderr
    assert ":guest@" not in result.stderr


def test_dd_post_refused_by_the_broker_says_why_at_once(pump, vhost):
    # A refused login is not a broker that is away: retrying for post_timeout cannot help.
    (pump.src / "a.txt").write_text("a")
    wrong = pump.broker_url.replace("guest:guest@", "guest:wrong@")
    result = pump.post(pump.src / "a.txt", check=False, post_broker=wrong, post_timeout="10m")
    assert result.returncode == 4
    assert "refused the login of user 'guest' (check the password in credentials.conf)" in result.stderr
    assert "retrying" not in result.stderr and "reconnecting" not in result.stderr
    assert "0 announced, 1 not announced" in result.stderr and "Traceback" not in result.stderr


def test_dd_post_refuses_paths_outside_post_base_dir(pump):
    outside = pump.base / "elsewhere.txt"
    outside.write_text("x")
    os.symlink(pump.base, pump.src / "escape")
    result = pump.post(outside, pump.src / "escape" / "elsewhere.txt", check=False)
    assert result.returncode == 1
    assert f"{outside} is outside post_base_dir" in result.stderr
    assert "reached through a symlink that leaves post_base_dir" in result.stderr
    assert "0 announced, 2 not announced" in result.stderr


def test_a_subscription_without_broker_is_a_config_error(pump):
    path = pump.base / "config" / "subscribe" / "nobroker.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"directory {pump.dst}\n")
    result = pump.command("subscribe", "declare", "nobroker")
    assert result.returncode == 2
    assert "needs broker" in result.stderr and "Traceback" not in result.stderr


def test_dd_post_reads_a_config_file_and_the_command_line_overrides_it(pump):
    (pump.src / "a.txt").write_text("a")
    config = pump.base / "post.conf"
    config.write_text(f"post_broker {pump.broker_url}\npost_exchange {pump.exchange}\n"
                      f"post_base_url http://wrong.example/\npost_base_dir {pump.src}\n")
    pump.subscriber_config()
    result = pump.command("post", "--config", config, f"--post_base_url={pump.base_url}", pump.src / "a.txt")
    assert result.returncode == 0, result.stderr
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "a.txt").exists())
    pump.stop(subscriber)


def test_subscriber_reconnects_when_the_broker_drops_its_connection(pump, vhost):
    import subprocess
    (pump.src / "before.txt").write_text("1")
    (pump.src / "after.txt").write_text("2")
    pump.subscriber_config()
    subscriber = pump.foreground()
    pump.post(pump.src / "before.txt")
    assert wait_for(lambda: (pump.dst / "before.txt").exists())
    closed = subprocess.run(["rabbitmqctl", "-q", "close_all_connections", "-p", vhost, "test: dropped"],
                            capture_output=True, text=True, timeout=60)
    assert closed.returncode == 0, closed.stderr
    pump.post(pump.src / "after.txt")
    arrived = wait_for(lambda: (pump.dst / "after.txt").exists(), timeout=60)
    status, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    assert "reconnecting" in log
    assert status == 0 and "Traceback" not in log


def test_subscriber_stops_on_sigterm_while_its_broker_is_away(pump, vhost):
    # Told to stop while reconnecting (refused, waiting longer each time), it stops at once;
    # what it waits for its last log messages is bounded by post_timeout.
    relay = BrokerRelay()
    pump.broker_url = relay.url(vhost)
    (pump.src / "a.txt").write_text("1")
    pump.subscriber_config(extra="post_timeout 2s")
    subscriber = pump.foreground()
    pump.post(pump.src / "a.txt")
    assert wait_for(lambda: (pump.dst / "a.txt").exists())
    relay.cut()
    time.sleep(2.5)     # refused twice or three times: in its 2 or 4 s wait
    status, log = pump.stop(subscriber, timeout=10)
    assert "retrying in" in log, log[-3000:]
    assert status == 0 and "Traceback" not in log


def test_amqps_checks_the_broker_certificate_and_its_host_name(pump, vhost, tmp_path):
    # The broker's amqps face presents a certificate for 127.0.0.1 from a CA of the test's own.
    self_signed(tmp_path / "ca.pem", tmp_path / "key.pem")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(tmp_path / "ca.pem", tmp_path / "key.pem")
    relay = BrokerRelay(tls=tls)
    (pump.src / "a.txt").write_text("over TLS")

    pump.broker_url = relay.url(vhost)
    untrusted = pump.post(pump.src / "a.txt", check=False)
    assert untrusted.returncode != 0
    assert "its TLS certificate is refused: self-signed certificate" in untrusted.stderr
    assert "retrying" not in untrusted.stderr
    assert "SSL_CERT_FILE=" in untrusted.stderr and "Traceback" not in untrusted.stderr

    pump.env["SSL_CERT_FILE"] = str(tmp_path / "ca.pem")
    pump.broker_url = relay.url(vhost, host="localhost")     # not the name the certificate has
    other_name = pump.post(pump.src / "a.txt", check=False)
    assert other_name.returncode != 0
    assert "Hostname mismatch" in other_name.stderr and "Traceback" not in other_name.stderr

    pump.broker_url = relay.url(vhost)
    pump.subscriber_config()
    subscriber = pump.foreground()
    posted = pump.post(pump.src / "a.txt", check=False)
    assert posted.returncode == 0, posted.stderr
    arrived = wait_for(lambda: (pump.dst / "a.txt").exists())
    _, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert (pump.dst / "a.txt").read_text() == "over TLS"
    relay.cut()


def test_a_file_with_a_name_of_the_longest_length_arrives(pump):
    name = "é" * 100 + "x" * 51 + ".bin"  # 200 + 51 + 4 = 255 bytes in UTF-8
    assert len(name.encode()) == 255
    (pump.src / name).write_bytes(b"long")
    pump.subscriber_config()
    pump.post(pump.src / name)
    subscriber = pump.foreground()
    arrived = wait_for(lambda: (pump.dst / name).exists())
    _, log = pump.stop(subscriber)
    assert arrived, log[-2000:]
    assert [p.name for p in pump.dst.iterdir()] == [name]


def test_a_subscription_sets_its_sftp_key_known_hosts_and_https_ca(pump, nginx_server, sshd_server):
    """The transport settings users need are options of the configuration, nothing else."""
    (pump.src / "over-https.txt").write_text("checked against the CA file")
    (sshd_server.root / "over-sftp.txt").write_text("with the key the configuration names")
    pump.subscriber_config(extra=f"allowed_schemes https sftp\nhttps_ca_file {nginx_server.ca_file}\n"
                                 f"sftp_key {sshd_server.key_file}\nknown_hosts {sshd_server.known_hosts}")
    https_base = nginx_server.https_url + pump.src.name + "/"
    pump.post(pump.src / "over-https.txt", post_base_url=https_base)
    pump.command("post", f"--post_broker={pump.broker_url}", f"--post_exchange={pump.exchange}",
                 f"--post_base_url={sshd_server.url}/", f"--post_base_dir={sshd_server.root}",
                 sshd_server.root / "over-sftp.txt", check=True)
    # Without them neither server would do: the CA is the test's own, the host key unknown.
    assert not (pump.env.get("SSL_CERT_FILE") or "").endswith("cert.pem")
    subscriber = pump.foreground()
    arrived = wait_for(lambda: (pump.dst / "over-https.txt").exists() and (pump.dst / "over-sftp.txt").exists())
    _, log = pump.stop(subscriber)
    assert arrived, log[-3000:]
    assert (pump.dst / "over-https.txt").read_text() == "checked against the CA file"
    assert (pump.dst / "over-sftp.txt").read_text() == "with the key the configuration names"


def test_dd_post_names_the_files_no_receiver_would_take_and_announces_the_others(pump):
    # Notices carry names as UTF-8: a Latin-1 name could be neither sent nor fetched. A line
    # break in a name, receivers refuse.
    (pump.src / "good.txt").write_text("g")
    (pump.src / os.fsdecode(b"caf\xe9.txt")).write_text("l")
    (pump.src / "two\nlines.txt").write_text("n")
    pump.subscriber_config()
    subscriber = pump.foreground()
    result = pump.post(pump.src, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "1 announced, 2 not announced" in result.stderr
    assert "its name is not UTF-8, as notices need (rename it in UTF-8" in result.stderr
    assert "its name contains a control character, which receivers refuse (rename it)" in result.stderr
    assert wait_for(lambda: (pump.dst / "good.txt").exists())
    pump.stop(subscriber)
    assert sorted(os.listdir(pump.dst)) == ["good.txt"]
