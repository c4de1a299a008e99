"""The duplicate store in a Redis that several hosts share (nodupe_store redis://...):
the nodes of a pump consuming one queue relay each notice once between them.

Same claim, confirm and release as the SQLite store (dd.store.nodupe), done by Lua
scripts so that each is atomic on the server: of two nodes claiming one key, exactly
one wins.  A claimant on another host cannot be asked whether its process still runs,
so each store keeps a lease (`alive:<claimant>`, renewed every LEASE / 4 seconds by a
thread): a claim whose claimant's lease has lapsed is taken over, as the SQLite store
takes over the claim of a dead process.  A copy that finds the key claimed by a live
claimant elsewhere is not a duplicate yet (that claimant may die before confirming, and
the broker hand its copy to us): claim raises Held, and the caller retries it later.

Keys of one path (each content and part of it) live in one hash, so `forget` is one
DEL; every hash expires on its own once nothing in it is fresh (Redis' own expiry),
and claims left by dead claimants are pruned when their path is claimed again.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from dd.core.errors import StoreUnavailable
from dd.store import pidfile, redisdb
from dd.store.nodupe import split

if TYPE_CHECKING:
    from redis.client import Pipeline
    from redis.commands.core import Script

    from dd.core.credentials import Url

log = logging.getLogger("dd.nodupe")

#: Seconds a claimant's lease lasts without renewal: how long a dead node's claims hold.
LEASE = 10.0
#: A claim older than this is abandoned, whoever holds it (a day: retry_ttl's default).
CLAIM_MAX = 86400.0
PREFIX = "dd:nodupe:"

# A hash per path: field = the rest of the key, value = "at owner" (owner '' once confirmed).
# Fields whose time is past, or whose claimant's lease lapsed, are pruned; the hash lives
# as long as its longest field.  A script takes a batch: KEYS the paths' hashes, ARGV now
# ('': the server's clock, one for every host), ttl, owner, claim_max, then (a resolve's
# mode and) each key's field.  One command for a batch: packing one per key cost more of
# the relay's time than the round trip.
_COMMON = """
local now, ttl, owner, claim_max = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
if not now then
  local time = redis.call('TIME')
  now = tonumber(time[1]) + tonumber(time[2]) / 1000000
end
local function parse(value)
  local space = string.find(value, ' ', 1, true)
  return tonumber(string.sub(value, 1, space - 1)), string.sub(value, space + 1)
end
local function live(at, who)
  if who == '' then return at > now - ttl end
  if at <= now - claim_max then return false end
  return who == owner or redis.call('EXISTS', '""" + PREFIX + """alive:' .. who) == 1
end
local function prune(key)
  local fields = redis.call('HGETALL', key)
  local last = 0
  for i = 1, #fields, 2 do
    local at, who = parse(fields[i + 1])
    if live(at, who) then
      local ends = (who == '' and at + ttl) or at + claim_max
      if ends > last then last = ends end
    else
      redis.call('HDEL', key, fields[i])
    end
  end
  if last > 0 then redis.call('PEXPIRE', key, math.ceil((last - now) * 1000) + 1000) end
end
"""
# Each key's answer, in order: 1 claimed; 0 a duplicate (confirmed, or claimed by us); -1
# held by a live claimant.
_CLAIM = _COMMON + """
local answers = {}
for i = 1, #KEYS do
  local key, field, answer = KEYS[i], ARGV[4 + i], 1
  local value = redis.call('HGET', key, field)
  if value then
    local at, who = parse(value)
    if live(at, who) then
      answer = ((who == '' or who == owner) and 0) or -1
    end
  end
  if answer == 1 then
    redis.call('HSET', key, field, string.format('%.6f %s', now, owner))
    prune(key)
  end
  answers[i] = answer
end
return answers
"""
# ARGV[5]: 'confirm' or 'release'; only our own claims are resolved.
_RESOLVE = _COMMON + """
for i = 1, #KEYS do
  local key, field = KEYS[i], ARGV[5 + i]
  local value = redis.call('HGET', key, field)
  if value then
    local at, who = parse(value)
    if who == owner then
      if ARGV[5] == 'confirm' then
        redis.call('HSET', key, field, string.format('%.6f ', now))
      else
        redis.call('HDEL', key, field)
      end
      prune(key)
    end
  end
end
return #KEYS
"""
_PRUNE = _COMMON + "for i = 1, #KEYS do prune(KEYS[i]) end\nreturn #KEYS\n"


class Held(StoreUnavailable):
    """The key is claimed by a live claimant on another host: not a duplicate yet."""

    rule = "nodupe"


class RedisStore:
    """Claims on notice keys in a Redis shared by the hosts of a pump (see the module)."""

    shared = True

    def __init__(self, url: Url, ttl: float, namespace: str) -> None:
        self.url = url
        self.ttl = ttl
        self.owner = str(pidfile.me())
        self.prefix = f"{PREFIX}{namespace}\0"
        self.db = redisdb.connect(url, f"dd-nodupe-{os.getpid()}")
        self._claim = self.db.register_script(_CLAIM)
        self._resolve = self.db.register_script(_RESOLVE)
        self._prune = self.db.register_script(_PRUNE)
        self._closed = threading.Event()
        # Confirms, releases and forgets not yet taken by Redis, in order, each a command to
        # queue on a pipeline: all sent in one round trip, and again before the next claim,
        # which fails (and is retried) until they are taken (each is harmless twice).  A
        # release lost would make the retry of its notice a duplicate of our own claim; a
        # forget lost, a file made again after a delete one.
        self._pending: list[tuple[Callable[[Pipeline], object], int]] = []    # and how many keys each changes
        self._lock = threading.Lock()
        try:
            self._renew()
        except StoreUnavailable as error:
            # Not fatal: claims fail (and are retried) until it answers, then the lease is taken.
            log.error("%s", error)
        threading.Thread(target=self._renewing, name="dd-nodupe-lease", daemon=True).start()

    def _renew(self) -> None:
        with redisdb.answering(self.url, "nodupe_store"):
            self.db.set(f"{PREFIX}alive:{self.owner}", "1", px=int(LEASE * 1000))

    def _renewing(self) -> None:
        while not self._closed.wait(LEASE / 4):
            try:
                self._renew()
            except StoreUnavailable:
                pass    # claims fail meanwhile, with the message; the lease comes back with Redis

    def _run(self, script: Script, keys: Sequence[str], now: float | None, mode: str = "",
             client: Pipeline | None = None) -> Any:   # the script's answer, or the pipeline
        paths, fields = zip(*(split(k) for k in keys))
        return script(keys=[self.prefix + path for path in paths],
                      args=[self._now(now), repr(self.ttl), self.owner, repr(CLAIM_MAX),
                            *([mode] if mode else []), *fields],
                      client=client)

    @staticmethod
    def _now(now: float | None) -> str:
        return "" if now is None else repr(now)     # '': the server's clock

    def _catch_up(self) -> None:
        with self._lock:
            if not self._pending:
                return
            pipe = self.db.pipeline(transaction=False)
            for queue, _ in self._pending:
                queue(pipe)
            with redisdb.answering(self.url, "nodupe_store"):
                pipe.execute()
            self._pending.clear()

    def _later(self, operations: list[tuple[Callable[[Pipeline], object], int]]) -> None:
        """Run `operations` after the pending ones; what Redis does not take waits for the next claim."""
        with self._lock:
            self._pending += operations
        try:
            self._catch_up()
        except StoreUnavailable as error:
            log.error("%s; %d change(s) of the duplicate store kept until it answers", error, self._pending_keys())

    def claim(self, the_key: str, now: float | None = None) -> bool:
        """True when the caller should handle `the_key`, False for a duplicate; Held when
        another host's live claimant has it in hand."""
        verdict = self.claim_each([the_key], now)[0]
        if isinstance(verdict, StoreUnavailable):
            raise verdict
        return verdict

    def claim_each(self, keys: Sequence[str], now: float | None = None) -> list[bool | StoreUnavailable]:
        """Each key's claim, in one round trip: True, False, or Held."""
        self._catch_up()
        if not keys:
            return []
        try:
            with redisdb.answering(self.url, "nodupe_store"):
                answers = self._run(self._claim, keys, now)
        except StoreUnavailable:
            # Redis may have taken them before the answer was lost: claims of ours, which the
            # retry of their notices would take for duplicates.
            self._later(self._resolving(keys, None, "release"))
            raise
        return [self._verdict(k, int(answer)) for k, answer in zip(keys, answers)]

    @staticmethod
    def _verdict(the_key: str, answer: int) -> bool | StoreUnavailable:
        if answer < 0:
            return Held(f"{the_key.split(chr(0))[1]} is being handled by another node",
                        fix="retried: a duplicate once that node confirms it, ours if it dies")
        return answer == 1

    def _resolving(self, keys: Iterable[str], now: float | None,
                   how: str) -> list[tuple[Callable[[Pipeline], object], int]]:
        keys = list(keys)
        return [(functools.partial(self._run, self._resolve, keys, now, how), len(keys))] if keys else []

    def _pending_keys(self) -> int:
        return sum(count for _, count in self._pending)

    def confirm(self, keys: Iterable[str], now: float | None = None) -> None:
        self._later(self._resolving(keys, now, "confirm"))

    def release(self, keys: Iterable[str]) -> None:
        self._later(self._resolving(keys, None, "release"))

    def forget(self, scope: str, rel_path: str) -> None:
        path, _ = split(f"{scope}\0{rel_path}\0")
        self._later([(lambda pipe: pipe.delete(self.prefix + path), 1)])

    def _paths(self) -> list[bytes]:
        pattern = "".join(f"\\{c}" if c in "*?[]\\" else c for c in self.prefix) + "*"
        with redisdb.answering(self.url, "nodupe_store"):
            return list(self.db.scan_iter(match=pattern, count=1000))

    def purge(self, now: float | None = None) -> None:
        """Forget confirmed keys older than ttl and claims of lapsed claimants (Redis'
        expiry does this on its own; this is for a store read before that)."""
        with redisdb.answering(self.url, "nodupe_store"):
            for path in self._paths():
                self._prune(keys=[path], args=[self._now(now), repr(self.ttl), self.owner, repr(CLAIM_MAX)])

    def __len__(self) -> int:
        with redisdb.answering(self.url, "nodupe_store"):
            return sum(int(self.db.hlen(path)) for path in self._paths())

    def close(self) -> None:
        self._closed.set()
        try:
            self._catch_up()
        except StoreUnavailable as error:
            # Our claims lapse with our lease: others take them; what is lost is confirms
            # (a duplicate may be handled again) and forgets (for nodupe_ttl).
            log.error("%s; %d change(s) of the duplicate store lost", error, self._pending_keys())
        try:
            with redisdb.answering(self.url, "nodupe_store"):
                self.db.delete(f"{PREFIX}alive:{self.owner}")
        except StoreUnavailable:
            pass    # the lease lapses on its own
        self.db.close()
