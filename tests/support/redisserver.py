"""A Redis of the test run's own, on a free loopback port (never the machine's 6379),
started once per session and removed after; each test takes a database of its own."""
import dataclasses
import itertools
import shutil
import uuid
from typing import Any

import pytest

from tests.support.servers import _start, _stop, free_port

REDIS = "redis-server"
#: Databases of the server: each test takes the next one.
DATABASES = 1000


@dataclasses.dataclass
class RedisServer:
    port: int
    databases: "itertools.count[int]"

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    if not shutil.which(REDIS):
        pytest.skip(f"{REDIS} is not installed (apt-get install redis-server)")
    base = tmp_path_factory.mktemp("redis")
    port = free_port()
    # No persistence, no other address: a scratch server for this run.
    process = _start([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(base),
                      "--save", "", "--appendonly", "no", "--databases", str(DATABASES)],
                     port, base / "redis.log")
    yield RedisServer(port, itertools.count(1))
    _stop(process)


@pytest.fixture
def redis_url(redis_server):
    """redis://127.0.0.1:PORT/DB: a database no other test of the run uses."""
    db = next(redis_server.databases)
    assert db < DATABASES, "more tests use Redis than the server has databases"
    return redis_server.url(db)


@dataclasses.dataclass
class RedisUser:
    """A Redis user of the test's own (url with its password) whom Redis can stop answering."""

    url: str
    name: str
    password: str
    admin: Any

    def answered(self, yes: bool) -> None:
        self.admin.acl_setuser(self.name, enabled=True, commands=["+@all" if yes else "-@all"])


@pytest.fixture
def redis_user(redis_url):
    import redis

    admin = redis.Redis.from_url(redis_url)
    name, password = f"dd-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    admin.acl_setuser(name, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    yield RedisUser(redis_url.replace("redis://", f"redis://{name}:{password}@"), name, password, admin)
    admin.acl_deluser(name)
    admin.close()
