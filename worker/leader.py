"""A leader lease in Redis: exactly one `poller beat` sends ticks; a standby takes over when the
leader stops renewing. Each step is one atomic script, keyed by a random token per process.

redbeat's default lock (1500 s) leaves a dead scheduler unreplaced for up to 25 minutes; this
lease is a fraction of POLLER_BEAT_FAILOVER_SECONDS.
"""

from __future__ import annotations

import os
from typing import Any

#: The Redis key of the beat leader lease.
LEADER_KEY = "poller:beat:leader"

_HOLD = """
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaderLease:
    """Hold (acquire or renew) and release the lease.

    Args:
        client: a ``redis.Redis`` client.
        ttl_s: how long the lease lasts without renewal.
        key: the lease's key.
        token: this holder's identity (random by default).
    """

    def __init__(self, client: Any, ttl_s: float, key: str = LEADER_KEY, token: str | None = None) -> None:
        self.client, self.ttl_ms, self.key = client, int(ttl_s * 1000), key
        self.token = token or os.urandom(16).hex()
        self._hold = client.register_script(_HOLD)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """True when we lead (just acquired, or renewed); False when another holder does."""
        return bool(self._hold(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up at once (a clean shutdown hands over without waiting for expiry)."""
        self._release(keys=[self.key], args=[self.token])
