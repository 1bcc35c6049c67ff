"""Being a good API citizen: a per-provider rate limit and circuit breaker shared by every worker.

State lives in Redis and every decision is one Lua script, so concurrent workers agree and each
breaker transition happens exactly once (one ``provider.paused`` event, not one per worker).
Time is Redis's own clock (``TIME``), so workers with skewed clocks still agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Every Redis key this module writes starts with this.
KEY_PREFIX = "poller:guard:"

# Admission of a chunk's calls to one account, in one round trip: the breaker first (closed -> all
# may go; open and cooling -> none; open and cooled -> one probe), then a token bucket with
# reservations for those: each call takes a token now or reserves the next one and is told how
# long to wait. A call that would wait longer than max_wait gets no slot, and neither do the rest.
# ARGV n, rate (0: no limit), burst, max_wait_ms, probe_ttl_ms. Returns {verdict, until_ms, now_ms,
# wait_ms...}: verdict 0 go, 1 probe, 2 defer; one wait per admitted call; the rest come back at until_ms.
_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local n, rate, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local out = {0, now, now}
if redis.call('HGET', KEYS[1], 'state') == 'open' then
  local untilms = tonumber(redis.call('HGET', KEYS[1], 'until'))
  if now < untilms then return {2, untilms, now} end
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[5])) then return {2, now + 1000, now} end
  out = {1, now + 1000, now}
  n = 1
end
if rate <= 0 then
  for _ = 1, n do out[#out + 1] = 0 end
  return out
end
local data = redis.call('HMGET', KEYS[3], 'tokens', 'ts')
local tokens = tonumber(data[1]) or burst
local ts = tonumber(data[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
for _ = 1, n do
  local wait = 0
  if tokens < 1 then wait = math.ceil((1 - tokens) * 1000 / rate) end
  if wait > max_wait then
    out[2] = now + wait
    break
  end
  tokens = tokens - 1
  out[#out + 1] = wait
end
redis.call('HSET', KEYS[3], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[3], math.ceil(burst * 1000 / rate) + 60000)
return out
"""

# Outcomes of calls: ARGV oks, fails, probe(1|0), window_ms, min_calls, ratio, cooldown_ms, max_cooldown_ms.
# Returns {transition, failures, calls, until_ms}: transition 0 none, 1 opened, 2 closed, 3 reopened.
_RECORD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local oks, fails_in, probe = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, min_calls, ratio = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cooldown, max_cooldown = tonumber(ARGV[7]), tonumber(ARGV[8])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  if probe == 0 then return {0, 0, 0, 0} end
  redis.call('DEL', KEYS[2])
  if fails_in == 0 then
    redis.call('DEL', KEYS[1], KEYS[3])
    return {2, 0, 0, 0}
  end
  local opens = redis.call('HINCRBY', KEYS[1], 'opens', 1)
  local wait = math.min(max_cooldown, cooldown * 2 ^ (opens - 1))
  redis.call('HSET', KEYS[1], 'until', now + wait)
  return {3, 0, 0, now + wait}
end
local bucket = KEYS[3]
if oks > 0 then redis.call('HINCRBY', bucket, 'ok', oks) end
if fails_in > 0 then redis.call('HINCRBY', bucket, 'fail', fails_in) end
if redis.call('PTTL', bucket) < 0 then redis.call('PEXPIRE', bucket, window) end
local fails = tonumber(redis.call('HGET', bucket, 'fail') or '0')
local calls = fails + tonumber(redis.call('HGET', bucket, 'ok') or '0')
if fails_in > 0 and calls >= min_calls and fails >= ratio * calls then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opens', 1, 'until', now + cooldown)
  redis.call('DEL', bucket)
  return {1, fails, calls, now + cooldown}
end
return {0, fails, calls, 0}
"""


@dataclass(frozen=True)
class BreakerPolicy:
    """When to pause a provider, and for how long."""

    window_s: float = 60.0
    min_calls: int = 10
    failure_ratio: float = 0.5
    cooldown_s: float = 30.0
    max_cooldown_s: float = 600.0


@dataclass(frozen=True)
class Admission:
    """May this call go out now? ``defer_until_ms`` (Redis time) when not."""

    go: bool
    probe: bool = False
    defer_until_ms: int | None = None


@dataclass(frozen=True)
class Transition:
    """A breaker state change, to be logged and written as a provider event."""

    kind: str  # "opened", "closed" or "reopened"
    failures: int
    calls: int
    until_ms: int | None


@dataclass(frozen=True)
class Admissions:
    """What the guard lets a chunk's calls to one account do.

    The first ``len(waits)`` calls may go, each after its wait in seconds (a reserved rate-limit
    slot); the rest may not go before ``defer_until_ms`` (Redis time).
    """

    waits: list[float]
    probe: bool
    defer_until_ms: int
    now_ms: int
    #: The rest wait for the breaker (open, or another call is its probe), not for the rate limit.
    breaker: bool = False


class RedisGuard:
    """Rate limits and circuit breakers in Redis, keyed by provider and account.

    Args:
        client: a ``redis.Redis`` client.
        policy: breaker tunables.
    """

    def __init__(self, client: Any, policy: BreakerPolicy = BreakerPolicy()) -> None:
        self.client = client
        self.policy = policy
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def _keys(provider: str, account: str) -> tuple[str, str, str]:
        base = f"{KEY_PREFIX}{provider}:{account}"
        return f"{base}:breaker", f"{base}:probe", f"{base}:window"

    def admit_many(self, provider: str, account: str, n: int, *, rate: float | None = None, burst: int = 1,
                   max_wait_s: float = 0.0) -> Admissions:
        """Admit up to ``n`` calls to one account at once: the breaker, then the rate limit
        (``rate`` calls per second, ``burst`` at once; None: no limit)."""
        breaker, probe, _ = self._keys(provider, account)
        verdict, until, now, *waits = self._admit(
            keys=[breaker, probe, f"{KEY_PREFIX}{provider}:{account}:bucket"],
            args=[n, rate or 0, burst, int(max_wait_s * 1000), int(self.policy.cooldown_s * 1000)])
        return Admissions([int(w) / 1000 for w in waits], int(verdict) == 1, int(until), int(now), int(verdict) != 0)

    def throttle(self, provider: str, account: str, *, rate: float, burst: int, max_wait_s: float) -> float:
        """Take one call slot. Returns 0 (go), the seconds to sleep before going (<= max_wait_s, slot
        reserved), or more than max_wait_s (no slot taken: defer the call)."""
        got = self.admit_many(provider, account, 1, rate=rate, burst=burst, max_wait_s=max_wait_s)
        return got.waits[0] if got.waits else (got.defer_until_ms - got.now_ms) / 1000

    def admit(self, provider: str, account: str) -> Admission:
        """Whether the breaker lets one call through (one probe at a time when cooling ends)."""
        got = self.admit_many(provider, account, 1)
        if got.waits:
            return Admission(True, probe=got.probe)
        return Admission(False, defer_until_ms=got.defer_until_ms)

    def record_many(
        self, provider: str, account: str, *, oks: int, fails: int, probe: bool = False
    ) -> Transition | None:
        """Count calls' outcomes (only provider-side failures count as failures). A probe's
        outcome (one call) closes or reopens an open breaker; others do not count while it is open."""
        p = self.policy
        kind, nfails, calls, until = self._record(
            keys=list(self._keys(provider, account)),
            args=[oks, fails, 1 if probe else 0, int(p.window_s * 1000), p.min_calls, p.failure_ratio,
                  int(p.cooldown_s * 1000), int(p.max_cooldown_s * 1000)])
        if kind == 0:
            return None
        return Transition({1: "opened", 2: "closed", 3: "reopened"}[int(kind)], int(nfails), int(calls),
                          int(until) or None)

    def record(self, provider: str, account: str, *, ok: bool, probe: bool) -> Transition | None:
        """Count one call's outcome."""
        return self.record_many(provider, account, oks=int(ok), fails=int(not ok), probe=probe)

    def reset(self, provider: str, account: str) -> None:
        """Forget a provider's breaker and bucket (operators, tests)."""
        self.client.delete(*self._keys(provider, account), f"{KEY_PREFIX}{provider}:{account}:bucket")
