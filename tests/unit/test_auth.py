"""worker.providers.auth and worker.credentials.Token: token expiry, the cache, one retry on a 401,
and reading token responses. No HTTP: the fetches are functions."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from worker.credentials import Token
from worker.errors import ProviderResponseInvalid, ProviderUnavailable
from worker.providers.auth import CachedToken, client_credentials_token, parse_time, token_from_response, with_token

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def token(value: str, lifetime_s: float, issued: datetime = NOW) -> Token:
    return Token(value, issued + timedelta(seconds=lifetime_s), issued)


# -- Token ------------------------------------------------------------------------------------

def test_a_token_is_dropped_a_minute_before_expiry_at_most() -> None:
    long = token("t", 3600)
    assert long.usable(NOW + timedelta(seconds=3539))
    assert not long.usable(NOW + timedelta(seconds=3540))


def test_a_short_token_is_dropped_at_ninety_percent_of_its_life() -> None:
    short = token("t", 100)
    assert short.usable(NOW + timedelta(seconds=89))
    assert not short.usable(NOW + timedelta(seconds=90))


# -- CachedToken ------------------------------------------------------------------------------

def counting_fetch(clock: Clock, lifetime_s: float = 3600):
    asked: list[str | None] = []

    def fetch(stale: str | None) -> Token:
        asked.append(stale)
        return token(f"t{len(asked)}", lifetime_s, clock())

    return fetch, asked


def test_the_cache_reuses_a_token_until_it_is_about_to_expire() -> None:
    clock = Clock()
    fetch, asked = counting_fetch(clock)
    cache = CachedToken(fetch, clock)
    assert [cache.get(), cache.get()] == ["t1", "t1"]
    clock.now += timedelta(seconds=3541)
    assert cache.get() == "t2"
    assert cache.fetches == 2 and asked == [None, None]


def test_a_stale_token_is_replaced_once_and_the_new_one_kept() -> None:
    clock = Clock()
    fetch, asked = counting_fetch(clock)
    cache = CachedToken(fetch, clock)
    cache.get()
    assert cache.get(stale="t1") == "t2"
    assert cache.get(stale="t1") == "t2"  # another thread's 401 on the old token fetches nothing
    assert asked == [None, "t1"]


def test_clear_forgets_the_token() -> None:
    clock = Clock()
    fetch, _ = counting_fetch(clock)
    cache = CachedToken(fetch, clock)
    cache.get()
    cache.clear()
    assert cache.get() == "t2"


def test_threads_share_one_fetch() -> None:
    clock = Clock()
    fetch, asked = counting_fetch(clock)
    cache = CachedToken(fetch, clock)
    threads = [threading.Thread(target=cache.get) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(asked) == 1


# -- with_token -------------------------------------------------------------------------------

@pytest.fixture
def cache() -> CachedToken:
    clock = Clock()
    return CachedToken(counting_fetch(clock)[0], clock)


def failing_until(good: str | None, error: Exception, used: list[str]):
    """A call that raises ``error`` for every token but ``good``."""
    def call(tok: str) -> str:
        used.append(tok)
        if tok != good:
            raise error
        return "ok"

    return call


def test_a_401_fetches_a_new_token_and_retries_once(cache: CachedToken) -> None:
    used: list[str] = []
    assert with_token(cache, failing_until("t2", ProviderResponseInvalid("401", provider="p", status_code=401),
                                           used)) == "ok"
    assert used == ["t1", "t2"]


def test_a_second_401_is_raised(cache: CachedToken) -> None:
    used: list[str] = []
    with pytest.raises(ProviderResponseInvalid):
        with_token(cache, failing_until(None, ProviderResponseInvalid("401", provider="p", status_code=401), used))
    assert used == ["t1", "t2"] and cache.fetches == 2


@pytest.mark.parametrize("error", [ProviderResponseInvalid("403", provider="p", status_code=403),
                                   ProviderUnavailable("503", provider="p", status_code=503)])
def test_other_errors_are_not_retried(cache: CachedToken, error: Exception) -> None:
    used: list[str] = []
    with pytest.raises(type(error)):
        with_token(cache, failing_until(None, error, used))
    assert used == ["t1"] and cache.fetches == 1


# -- parse_time -------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "expected"), [
    (1795428000, datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
    (1795428000.5, datetime(2026, 11, 23, 10, 0, 0, 500000, tzinfo=UTC)),
    (" 1795428000 ", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
    ("2026-11-23T10:00:00Z", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
    ("2026-11-23T11:00:00+01:00", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
    ("2026-11-23T10:00:00", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
    ("Mon, 23 Nov 2026 10:00:00 GMT", datetime(2026, 11, 23, 10, 0, tzinfo=UTC)),
])
def test_parse_time_reads_epoch_iso_and_http_dates(value: Any, expected: datetime) -> None:
    got = parse_time(value)
    assert got == expected and got is not None and got.tzinfo is not None


@pytest.mark.parametrize("value", [None, True, False, "", "soon", [1], {"at": 1}])
def test_parse_time_gives_none_for_anything_else(value: Any) -> None:
    assert parse_time(value) is None


# -- token_from_response ----------------------------------------------------------------------

def test_expires_in_is_relative_to_now() -> None:
    assert token_from_response({"access_token": "a", "expires_in": 300}, now=NOW, provider="p") == token("a", 300)


def test_an_absolute_expiry_wins_over_expires_in() -> None:
    body = {"access_token": "a", "expires_in": 300, "expires_on": "2026-11-23T11:00:00Z"}
    assert token_from_response(body, now=NOW, provider="p").expires_at == NOW + timedelta(hours=1)


@pytest.mark.parametrize("body", [{"access_token": "a"}, {"access_token": "a", "expires_in": "soon"},
                                  {"access_token": "a", "expires_at": "garbage"}])
def test_no_usable_expiry_gives_the_default_lifetime(body: dict[str, Any]) -> None:
    assert token_from_response(body, now=NOW, provider="p", default_lifetime_s=60) == token("a", 60)


def test_a_bare_string_body_is_the_token() -> None:
    assert token_from_response("raw-token", now=NOW, provider="p", default_lifetime_s=10) == token("raw-token", 10)


def test_other_token_keys() -> None:
    body = {"access_token": "", "token": "b", "expires_in": 5}
    assert token_from_response(body, now=NOW, provider="p", token_keys=("access_token", "token")).value == "b"


@pytest.mark.parametrize(("body", "message"), [
    ([1, 2], "not a JSON object"), ("", "not a JSON object"), (None, "not a JSON object"),
    ({"token_type": "bearer"}, "has none of access_token"), ({"access_token": 5}, "has none of access_token"),
])
def test_unusable_token_responses_are_the_providers(body: Any, message: str) -> None:
    with pytest.raises(ProviderResponseInvalid, match=message) as err:
        token_from_response(body, now=NOW, provider="amili_arm")
    assert err.value.provider == "amili_arm"


# -- client_credentials_token -----------------------------------------------------------------

class FakeAuth:
    provider = "amili_arm"

    def __init__(self, answer: Any) -> None:
        self.answer, self.calls = answer, []  # type: list[tuple[str, str, dict[str, Any]]]

    def request_json(self, method: str, path: str, **kw: Any) -> tuple[Any, Any]:
        self.calls.append((method, path, kw))
        return None, self.answer


@pytest.mark.parametrize(("scope", "form_scope"), [("api", {"scope": "api"}), (None, {})])
def test_client_credentials_posts_the_form(scope: str | None, form_scope: dict[str, str]) -> None:
    auth = FakeAuth({"access_token": "c", "expires_in": 120})
    got = client_credentials_token(auth, client_id="id", client_secret="sec", scope=scope, now=NOW)  # type: ignore[arg-type]
    assert got == token("c", 120)
    assert auth.calls == [("POST", "/token", {"data": {"grant_type": "client_credentials", "client_id": "id",
                                                        "client_secret": "sec", **form_scope},
                                              "not_found_is_gone": False})]
