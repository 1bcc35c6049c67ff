"""config.validation.parse_duration: a duration setting as a timedelta, or a ConfigurationError
that names the setting and never quotes the value."""

from __future__ import annotations

from datetime import timedelta

import pytest

from config.validation import parse_duration
from worker.errors import ConfigurationError


@pytest.mark.parametrize(("text", "expected"), [
    ("90", timedelta(seconds=90)),
    ("1.5", timedelta(seconds=1.5)),
    ("45s", timedelta(seconds=45)),
    ("30m", timedelta(minutes=30)),
    ("12h", timedelta(hours=12)),
    ("5d", timedelta(days=5)),
    (" 2H ", timedelta(hours=2)),
    ("1 h", timedelta(hours=1)),
    ("366d", timedelta(days=366)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text, "POLLER_X") == expected


@pytest.mark.parametrize("text", ["", "h", "abc", "0", "-5", "0m", "inf", "nan", "1e400", "367d", "5w"])
def test_bad_durations_name_the_setting(text: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        parse_duration(text, "POLLER_SECRET_TTL")
    message = str(err.value)
    assert message.startswith("POLLER_SECRET_TTL must be a positive number of seconds")
    assert "at most 366 days" in message
    if text.strip():
        assert repr(text) not in message
