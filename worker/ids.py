"""Public identifiers: sortable, unique, URL-safe."""

from __future__ import annotations

from datetime import UTC, datetime

#: Crockford's base32: no I, L, O, U, so ids survive being read aloud or retyped.
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def event_id(now: datetime, entropy: bytes, offset: int = 0) -> str:
    """An ``evt_`` id in ULID layout: 48-bit millisecond time then 80 random bits.

    Args:
        now: creation time (aware).
        entropy: at least 10 random bytes.
        offset: added to the random part, so ids made together in one millisecond sort in order.
    """
    if len(entropy) < 10:
        raise ValueError("event_id needs 10 bytes of entropy")
    # The top random bit is cleared so adding a small offset can never carry into the time part.
    rand = (int.from_bytes(entropy[:10], "big") >> 1) + offset
    value = (int(now.timestamp() * 1000) << 80) | rand
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "evt_" + "".join(reversed(chars))


def event_ids(now: datetime, entropy: bytes, count: int) -> list[str]:
    """``count`` ids for events written together, in increasing order."""
    return [event_id(now, entropy, n) for n in range(count)]


def event_time(event_id: str) -> datetime | None:
    """When an ``evt_`` id was made (its ULID time part); None for anything else."""
    body = event_id[4:].upper() if event_id.startswith("evt_") else ""
    if len(body) != 26 or any(c not in _ALPHABET for c in body):
        return None
    value = 0
    for c in body:
        value = value * 32 + _ALPHABET.index(c)
    return datetime.fromtimestamp((value >> 80) / 1000, UTC)
