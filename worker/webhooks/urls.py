"""Refuse webhook targets that would let a subscription reach inside our network (SSRF).

Checked when a subscription is added and again before every attempt, since DNS can change; the
attempt then connects to an address this check accepted (see worker.http_transport), so a second,
different DNS answer (rebinding) is never used.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from worker.errors import InputError, TargetRefused

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Cloud metadata endpoints, refused by name as well as by address, whatever the settings say.
METADATA_HOSTS = {"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
                  "instance-data.ec2.internal", "metadata.azure.com"}
#: AWS/GCP/Azure/OpenStack metadata addresses (link-local anyway), AWS's IPv6 one and Alibaba's.
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                      ipaddress.ip_address("100.100.100.200")}
#: Link-local networks: metadata services and neighbours live there; no setting opens them.
LINK_LOCAL = (ipaddress.ip_network("169.254.0.0/16"), ipaddress.ip_network("fe80::/10"))
#: Networks refused unless POLLER_WEBHOOK_ALLOW_PRIVATE, beyond what ``ipaddress`` flags.
EXTRA_PRIVATE = (
    (ipaddress.ip_network("0.0.0.0/8"), "this-network"),
    (ipaddress.ip_network("100.64.0.0/10"), "carrier-grade NAT"),
    (ipaddress.ip_network("192.88.99.0/24"), "6to4 relay"),
    (ipaddress.ip_network("fec0::/10"), "site-local"),
    (ipaddress.ip_network("fc00::/7"), "unique-local"),
    (ipaddress.ip_network("64:ff9b:1::/48"), "local-use NAT64"),
)
#: IPv6 ranges that carry an IPv4 address in their last 32 bits (RFC 6052 NAT64, RFC 4291
#: IPv4-compatible, RFC 2765 IPv4-translated); 6to4 and Teredo are decoded by ``ipaddress``.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")

ALLOW_HTTP = "POLLER_WEBHOOK_ALLOW_HTTP"
ALLOW_PRIVATE = "POLLER_WEBHOOK_ALLOW_PRIVATE"

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, allow_http: bool, allow_private: bool, resolver: Resolver = resolve) -> list[str]:
    """Check ``url`` as a webhook target and return the addresses its host was checked at.

    Refused: anything but http(s); http unless ``allow_http``; credentials in the URL; a host that
    does not resolve; any resolved address (or IPv4 address embedded in an IPv6 one) that is
    loopback, private, multicast, reserved, unspecified and the like, unless ``allow_private``;
    link-local and cloud metadata addresses and names always. With ``allow_private`` a name that
    does not resolve is accepted (an empty list): it is resolved and checked again before sending.

    Raises:
        TargetRefused: our policy refuses the target (``setting`` names what would allow it).
        InputError: the URL is malformed or its host does not resolve.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise InputError(f"webhook URL must be https:// (got {parts.scheme or 'no'} scheme)")
    if parts.scheme == "http" and not allow_http:
        raise TargetRefused(f"webhook URL must use https (set {ALLOW_HTTP}=true to allow http)", ALLOW_HTTP)
    if not parts.hostname:
        raise InputError(f"webhook URL has no host: {url!r}")
    if parts.username or parts.password:
        raise InputError("webhook URL must not carry credentials; the signature authenticates us")
    host = parts.hostname.lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise TargetRefused(f"webhook host {host} is a cloud metadata endpoint (no setting allows it)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolver(host, port)
    except (OSError, ValueError) as err:
        if allow_private:
            return []
        raise InputError(f"webhook host {host} does not resolve ({err})") from None
    if not addresses and not allow_private:
        raise InputError(f"webhook host {host} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason, switchable = forbidden(address)
        if reason is None or (switchable and allow_private):
            continue
        if switchable:
            raise TargetRefused(f"webhook host {host} resolves to {address}, a {reason} "
                                f"(set {ALLOW_PRIVATE}=true to allow it)", ALLOW_PRIVATE)
        raise TargetRefused(f"webhook host {host} resolves to {address}, a {reason} (no setting allows it)")
    return addresses


def forbidden(address: Address) -> tuple[str | None, bool]:
    """Why ``address`` is no webhook target, and whether POLLER_WEBHOOK_ALLOW_PRIVATE may allow it.

    IPv4 addresses embedded in IPv6 ones (mapped, compatible, NAT64, 6to4, Teredo) are judged as
    what they reach. Returns e.g. ``("loopback address (carries 127.0.0.1)", True)``, or
    ``(None, True)`` for an address anyone may use.
    """
    # The embedded address first: it is where the packets end up, and the clearer reason.
    candidates = [*embedded_ipv4(address), address]
    for check, switchable in ((_always_refused, False), (_private, True)):
        for candidate in candidates:
            reason = check(candidate)
            if reason:
                carried = f" (carries {candidate})" if candidate != address else ""
                return f"{reason} address{carried}", switchable
    return None, True


def _always_refused(address: Address) -> str | None:
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if any(address.version == net.version and address in net for net in LINK_LOCAL):
        return "link-local"
    return None


def embedded_ipv4(address: Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries (and so reaches), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped:
        found.append(address.ipv4_mapped)
    if address.sixtofour:
        found.append(address.sixtofour)
    if address.teredo:
        found.extend(address.teredo)  # the server, and the client the tunnel ends at
    # :: and ::1 are IPv4-compatible in form only; they are judged as themselves.
    compatible = address in IPV4_COMPATIBLE and int(address) > 1
    if address in NAT64 or address in IPV4_TRANSLATED or compatible:
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _private(address: Address) -> str | None:
    for attr, label in (("is_loopback", "loopback"), ("is_unspecified", "unspecified"),
                        ("is_multicast", "multicast")):
        if getattr(address, attr):
            return label
    for net, label in EXTRA_PRIVATE:
        if address.version == net.version and address in net:
            return label
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    return None
