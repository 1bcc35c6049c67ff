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

# Token bucket with reservations: a caller takes a token now or reserves the next one and is told
# how long to wait. A wait longer than max_wait is not reserved (the caller defers instead).
_THROTTLE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local rate, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local data = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(data[1]) or burst
local ts = tonumber(data[2]) or now
tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
tokens = tokens - 1
local wait = 0
if tokens < 0 then wait = math.ceil(-tokens * 1000 / rate) end
if wait > max_wait then tokens = tokens + 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 60000)
return wait
"""

# Admission: closed -> go; open and cooling -> defer; open and cooled -> one probe goes.
# Returns {verdict, until_ms}: verdict 0 go, 1 probe, 2 defer.
_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'open' then return {0, 0} end
local untilms = tonumber(redis.call('HGET', KEYS[1], 'until'))
if now < untilms then return {2, untilms} end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', tonumber(ARGV[1])) then return {1, untilms} end
return {2, now + tonumber(ARGV[2])}
"""

# Outcome of a call: ARGV ok(1|0), probe(1|0), window_ms, min_calls, ratio, cooldown_ms, max_cooldown_ms.
# Returns {transition, failures, calls, until_ms}: transition 0 none, 1 opened, 2 closed, 3 reopened.
_RECORD = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ok, probe = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, min_calls, ratio = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local cooldown, max_cooldown = tonumber(ARGV[6]), tonumber(ARGV[7])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  if probe == 0 then return {0, 0, 0, 0} end
  redis.call('DEL', KEYS[2])
  if ok == 1 then
    redis.call('DEL', KEYS[1], KEYS[3])
    return {2, 0, 0, 0}
  end
  local opens = redis.call('HINCRBY', KEYS[1], 'opens', 1)
  local wait = math.min(max_cooldown, cooldown * 2 ^ (opens - 1))
  redis.call('HSET', KEYS[1], 'until', now + wait)
  return {3, 0, 0, now + wait}
end
local bucket = KEYS[3]
if ok == 1 then redis.call('HINCRBY', bucket, 'ok', 1) else redis.call('HINCRBY', bucket, 'fail', 1) end
if redis.call('PTTL', bucket) < 0 then redis.call('PEXPIRE', bucket, window) end
local fails = tonumber(redis.call('HGET', bucket, 'fail') or '0')
local calls = fails + tonumber(redis.call('HGET', bucket, 'ok') or '0')
if ok == 0 and calls >= min_calls and fails >= ratio * calls then
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


class RedisGuard:
    """Rate limits and circuit breakers in Redis, keyed by provider and account.

    Args:
        client: a ``redis.Redis`` client.
        policy: breaker tunables.
    """

    def __init__(self, client: Any, policy: BreakerPolicy = BreakerPolicy()) -> None:
        self.client = client
        self.policy = policy
        self._throttle = client.register_script(_THROTTLE)
        self._admit = client.register_script(_ADMIT)
        self._record = client.register_script(_RECORD)

    @staticmethod
    def _keys(provider: str, account: str) -> tuple[str, str, str]:
        base = f"{KEY_PREFIX}{provider}:{account}"
        return f"{base}:breaker", f"{base}:probe", f"{base}:window"

    def throttle(self, provider: str, account: str, *, rate: float, burst: int, max_wait_s: float) -> float:
        """Take a call slot. Returns 0 (go), the seconds to sleep before going (<= max_wait_s, slot
        reserved), or more than max_wait_s (no slot taken: defer the poll)."""
        wait_ms = self._throttle(keys=[f"{KEY_PREFIX}{provider}:{account}:bucket"],
                                 args=[rate, burst, int(max_wait_s * 1000)])
        return float(wait_ms) / 1000

    def admit(self, provider: str, account: str) -> Admission:
        """Whether the breaker lets a call through (one probe at a time when cooling ends)."""
        breaker, probe, _ = self._keys(provider, account)
        verdict, until = self._admit(keys=[breaker, probe], args=[int(self.policy.cooldown_s * 1000), 1000])
        if verdict == 0:
            return Admission(True)
        if verdict == 1:
            return Admission(True, probe=True)
        return Admission(False, defer_until_ms=int(until))

    def record(self, provider: str, account: str, *, ok: bool, probe: bool) -> Transition | None:
        """Count a call's outcome (only provider-side failures count as not ok)."""
        p = self.policy
        kind, fails, calls, until = self._record(
            keys=list(self._keys(provider, account)),
            args=[1 if ok else 0, 1 if probe else 0, int(p.window_s * 1000), p.min_calls, p.failure_ratio,
                  int(p.cooldown_s * 1000), int(p.max_cooldown_s * 1000)])
        if kind == 0:
            return None
        return Transition({1: "opened", 2: "closed", 3: "reopened"}[int(kind)], int(fails), int(calls),
                          int(until) or None)

    def reset(self, provider: str, account: str) -> None:
        """Forget a provider's breaker and bucket (operators, tests)."""
        self.client.delete(*self._keys(provider, account), f"{KEY_PREFIX}{provider}:{account}:bucket")
