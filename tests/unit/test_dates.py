"""worker.dates: HTTP dates read, ISO 8601 read and written with a Z."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from worker.dates import iso_z, parse_http_date, parse_iso

MOMENT = datetime(2025, 10, 7, 7, 41, 1, tzinfo=UTC)


@pytest.mark.parametrize("text", ["Tue, 07 Oct 2025 07:41:01 GMT", "Tue, 07 Oct 2025 07:41:01 +0000",
                                  "Tue, 07 Oct 2025 09:41:01 +0200"])
def test_http_date_is_read_as_an_aware_time(text: str) -> None:
    parsed = parse_http_date(text)
    assert parsed == MOMENT
    assert parsed is not None and parsed.tzinfo is not None


def test_http_date_without_a_zone_is_utc() -> None:
    assert parse_http_date("Tue, 07 Oct 2025 07:41:01 -0000") == MOMENT


@pytest.mark.parametrize("text", ["", "soon", "120", "2025-10-07T07:41:01Z", "Tue, 99 Foo 2025"])
def test_what_is_not_an_http_date_gives_none(text: str) -> None:
    assert parse_http_date(text) is None


@pytest.mark.parametrize("text", ["2025-10-07T07:41:01Z", "2025-10-07T07:41:01+00:00", "2025-10-07T07:41:01",
                                  "2025-10-07T09:41:01+02:00"])
def test_iso_is_read_with_z_an_offset_or_neither(text: str) -> None:
    parsed = parse_iso(text)
    assert parsed == MOMENT
    assert parsed.tzinfo is not None


def test_iso_keeps_the_offset_it_was_given() -> None:
    assert parse_iso("2025-10-07T09:41:01+02:00").utcoffset() == timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "yesterday", "Tue, 07 Oct 2025 07:41:01 GMT"])
def test_what_is_not_iso_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_iso(text)


def test_iso_z_writes_utc_with_a_z() -> None:
    assert iso_z(MOMENT) == "2025-10-07T07:41:01Z"
    assert iso_z(MOMENT.replace(microsecond=5000)) == "2025-10-07T07:41:01.005000Z"


def test_iso_z_keeps_another_offset_and_none() -> None:
    assert iso_z(MOMENT.astimezone(timezone(timedelta(hours=2)))) == "2025-10-07T09:41:01+02:00"
    assert iso_z(None) is None


def test_round_trip() -> None:
    assert parse_iso(iso_z(MOMENT)) == MOMENT
