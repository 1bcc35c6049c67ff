"""worker.webhooks.urls: which webhook targets our policy refuses, with DNS answers passed in."""

from __future__ import annotations

import ipaddress

import pytest

from worker.errors import InputError, TargetRefused
from worker.webhooks.urls import ALLOW_HTTP, ALLOW_PRIVATE, check_url, embedded_ipv4, forbidden

PUBLIC = "93.184.215.14"


def answers(*addresses: str):
    seen: list[tuple[str, int]] = []

    def resolver(host: str, port: int) -> list[str]:
        seen.append((host, port))
        return list(addresses)

    resolver.seen = seen  # type: ignore[attr-defined]
    return resolver


def no_answer(host: str, port: int) -> list[str]:
    raise OSError("Name or service not known")


def check(url: str, resolver=None, *, allow_http: bool = False, allow_private: bool = False) -> list[str]:
    return check_url(url, allow_http=allow_http, allow_private=allow_private, resolver=resolver or answers(PUBLIC))


def test_a_public_https_target_passes_with_the_addresses_checked() -> None:
    resolver = answers(PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert check("https://Hooks.Example.com./in", resolver) == [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]
    assert resolver.seen == [("hooks.example.com", 443)]


def test_the_port_given_or_the_schemes_is_resolved() -> None:
    resolver = answers(PUBLIC)
    check("https://example.com:8443/", resolver)
    check("http://example.com/", resolver, allow_http=True)
    assert resolver.seen == [("example.com", 8443), ("example.com", 80)]


def test_http_is_refused_unless_allowed() -> None:
    with pytest.raises(TargetRefused, match=ALLOW_HTTP) as err:
        check("http://example.com/")
    assert err.value.setting == ALLOW_HTTP
    assert check("http://example.com/", allow_http=True) == [PUBLIC]


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.com/", "must be https:// \\(got ftp scheme\\)"),
    ("example.com/hook", "got no scheme"),
    ("https:///path", "has no host"),
    ("https://user:pw@example.com/", "must not carry credentials"),
])
def test_malformed_urls_are_input_errors(url: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        check(url)
    assert not isinstance(err.value, TargetRefused)


@pytest.mark.parametrize("host", ["metadata.google.internal", "METADATA", "instance-data."])
def test_metadata_names_are_refused_whatever_the_settings(host: str) -> None:
    with pytest.raises(TargetRefused, match="cloud metadata endpoint") as err:
        check(f"https://{host}/", allow_http=True, allow_private=True)
    assert err.value.setting is None


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"), ("0.0.0.0", "unspecified"), ("::1", "loopback"),
    ("fd12::1", "unique-local"), ("224.0.0.1", "multicast"),
])
def test_private_addresses_are_refused_unless_allowed(address: str, reason: str) -> None:
    with pytest.raises(TargetRefused, match=f"resolves to .*a {reason}.*{ALLOW_PRIVATE}") as err:
        check("https://inside.example/", answers(address))
    assert err.value.setting == ALLOW_PRIVATE
    assert check("https://inside.example/", answers(address), allow_private=True) == [address]


@pytest.mark.parametrize("address", ["169.254.169.254", "169.254.1.1", "fe80::1%eth0", "fd00:ec2::254",
                                     "100.100.100.200", "::ffff:169.254.169.254"])
def test_link_local_and_metadata_addresses_are_always_refused(address: str) -> None:
    with pytest.raises(TargetRefused, match="no setting allows it") as err:
        check("https://x.example/", answers(address), allow_private=True)
    assert err.value.setting is None


def test_one_bad_address_among_good_ones_refuses() -> None:
    with pytest.raises(TargetRefused):
        check("https://x.example/", answers(PUBLIC, "10.0.0.1"))


def test_a_name_that_does_not_resolve() -> None:
    with pytest.raises(InputError, match="does not resolve"):
        check("https://nowhere.example/", no_answer)
    with pytest.raises(InputError, match="does not resolve"):
        check("https://nowhere.example/", answers())
    # With private targets allowed, it is accepted now and checked again before each send.
    assert check("https://nowhere.example/", no_answer, allow_private=True) == []


@pytest.mark.parametrize(("address", "carried"), [
    ("::ffff:10.0.0.1", ["10.0.0.1"]),  # IPv4-mapped
    ("64:ff9b::7f00:1", ["127.0.0.1"]),  # NAT64
    ("::10.0.0.1", ["10.0.0.1"]),  # IPv4-compatible
    ("2002:c0a8:0101::1", ["192.168.1.1"]),  # 6to4
    ("::1", []), ("::", []), ("2606:2800::1", []),
])
def test_embedded_ipv4(address: str, carried: list[str]) -> None:
    assert [str(a) for a in embedded_ipv4(ipaddress.ip_address(address))] == carried
    assert embedded_ipv4(ipaddress.ip_address("10.0.0.1")) == []


def test_forbidden_names_the_address_an_ipv6_one_carries() -> None:
    assert forbidden(ipaddress.ip_address("::ffff:127.0.0.1")) == ("loopback address (carries 127.0.0.1)", True)
    assert forbidden(ipaddress.ip_address("::ffff:169.254.169.254")) == (
        "cloud metadata address (carries 169.254.169.254)", False)
    assert forbidden(ipaddress.ip_address(PUBLIC)) == (None, True)
