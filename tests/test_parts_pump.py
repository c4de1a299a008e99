"""Files in parts through real brokers, servers and processes: shuffled,
duplicated, one part served corrupt once, a subscriber killed mid-file, parts
that do not make the announced file."""
import dataclasses
import hashlib
import os
import random
import signal
import sqlite3
import time

import amqp
import pytest

from dd.core import formats
from dd.core.credentials import Url
from dd.core.notice import Checksum
from tests.support.pump import wait_for
from tests.support.rangeserver import RangeServer
from tests.test_assembly import part_notices
from tests.test_limits import _vm_hwm

MiB = 1 << 20


def publish(pump, notices):
    """Publish notices on the pump's exchange over one connection, with confirms."""
    url = Url.parse(pump.broker_url)
    connection = amqp.Connection(f"{url.host}:{url.port or 5672}", userid=url.user,
                                 password=url.password, virtual_host=url.path.lstrip("/"))
    connection.connect()
    try:
        channel = connection.channel()
        channel.exchange_declare(pump.exchange, "topic", durable=True, auto_delete=False)
        channel.confirm_select()
        for notice in notices:
            message = formats.encode(notice)
            channel.basic_publish(amqp.Message(message.body, application_headers=message.headers,
                                               content_type=message.content_type, delivery_mode=2),
                                  exchange=pump.exchange, routing_key=message.topic)
    finally:
        connection.close()


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def big_file(path, size):
    with open(path, "wb") as f:
        for _ in range(size // (4 * MiB)):
            f.write(os.urandom(4 * MiB))
    return path


def hidden(directory):
    return sorted(n for n in os.listdir(directory) if n.startswith(".")) if directory.exists() else []


def config(pump, hook, rate_max=0):
    return pump.subscriber_config(extra=f"allowed_schemes http\non_file {hook}\nrate_max {rate_max}\n"
                                        "threads 2\nprefetch 4")


@pytest.mark.parametrize("instances", [1, 2])
def test_256_mib_in_4_mib_parts_survive_shuffle_duplicates_corruption_and_sigkill(pump, instances):
    source = pump.base / "source"
    source.mkdir()
    f = big_file(source / "big.bin", 256 * MiB)
    record, hook = pump.base / "hook.log", pump.base / "hook.sh"
    hook.write_text(f'#!/bin/sh\necho "$1" >> {record}\n')
    hook.chmod(0o755)
    with RangeServer(source) as server:
        notices = part_notices(f, source, 4 * MiB, base_url=server.url)
        rng = random.Random(instances)
        arrivals = notices + rng.sample(notices, len(notices) // 10)
        rng.shuffle(arrivals)
        # The first part to arrive is served corrupt once: it must be fetched again.
        server.corrupt_once.add(("big.bin", arrivals[0].part.block_number * 4 * MiB))
        # Slow at first, so the kill lands in the middle of the file.
        config(pump, hook, rate_max="32M")
        publish(pump, arrivals)
        final = pump.dst / "big.bin"
        first = [pump.foreground("sub", "--instance", str(i + 1)) for i in range(instances)]
        assert wait_for(lambda: len(hidden(pump.dst)) == 2, timeout=30)
        time.sleep(2)
        first[0].send_signal(signal.SIGKILL)
        first[0].communicate()
        assert not final.exists()
        config(pump, hook)
        restarted = pump.foreground("sub", "--instance", "1")

        peak = []

        def done():
            assert not final.exists() or final.stat().st_size == 256 * MiB
            peak.append(_vm_hwm(restarted.pid))
            return record.exists() and pump.queue_depth() == 0

        assert wait_for(done, timeout=90, interval=0.2)
        for process in [restarted, *first[1:]]:
            pump.stop(process)
    assert max(peak) < 128 * MiB  # the receiver never holds the 256 MiB file, about 50 MiB measured
    assert sha256(final) == sha256(f)
    assert record.read_text().splitlines() == [str(final)]
    assert hidden(pump.dst) == []
    assert server.corrupted == [("big.bin", arrivals[0].part.block_number * 4 * MiB)]
    log = "".join(p.read_text() for p in (pump.base / "logs").iterdir())  # --instance logs to files
    assert "Traceback" not in log
    assert "checksum" in log  # the corrupt part was noticed, and fetched again
    assert log.count("201 delivered: part ") == 1, log[-3000:]


@pytest.mark.parametrize("size", [0, 64 << 10, (64 << 10) + 1, 3 * (64 << 10) + 1])
def test_dd_post_splits_and_dd_subscribe_reassembles(pump, size):
    (pump.src / "f").write_bytes(os.urandom(size))
    pump.subscriber_config()
    posted = pump.post(pump.src / "f", blocksize="64k")
    expected = 1 if size <= 64 << 10 else -(-size // (64 << 10))
    assert f"{expected} announced" in posted.stderr
    subscriber = pump.foreground()
    assert wait_for(lambda: (pump.dst / "f").exists() and pump.queue_depth() == 0)
    _, log = pump.stop(subscriber)
    assert (pump.dst / "f").read_bytes() == (pump.src / "f").read_bytes()
    assert log.count("201 delivered") == 1
    assert hidden(pump.dst) == []


def test_parts_that_do_not_make_the_announced_file_are_refused_with_their_own_code(pump):
    """Every part verifies but the whole does not: 422 [checksum], never 404; the partial
    file is discarded and the notice is not kept for retry, since the source is wrong."""
    source = pump.base / "source"
    source.mkdir()
    (source / "f").write_bytes(os.urandom(3 * (64 << 10)))
    (source / "after").write_bytes(b"delivered after the refusal\n")
    with RangeServer(source) as server:
        notices = part_notices(source / "f", source, 64 << 10, base_url=server.url)
        wrong = [dataclasses.replace(n, checksum=Checksum("sha256", "1" * 64)) for n in notices]
        # One thread works in order: once "after" is in place, every part has had its outcome.
        pump.subscriber_config(extra="allowed_schemes http\nthreads 1")
        publish(pump, wrong + part_notices(source / "after", source, 64 << 10, base_url=server.url))
        subscriber = pump.foreground()
        assert wait_for(lambda: (pump.dst / "after").exists() and pump.queue_depth() == 0)
        _, log = pump.stop(subscriber)
    [refused] = [line for line in log.splitlines() if "[checksum]" in line]
    assert "422 " in refused and "do not make the announced file" in refused, log[-3000:]
    assert "kept for retry" not in log and " 404 " not in log
    assert not (pump.dst / "f").exists() and hidden(pump.dst) == []
    retry_db = pump.base / "state" / "subscribe" / "sub" / "retry.i001.db"
    assert sqlite3.connect(retry_db).execute("SELECT key FROM retry").fetchall() == []
