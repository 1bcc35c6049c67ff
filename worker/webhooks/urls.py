"""Refuse webhook targets that would let a subscription reach inside our network (SSRF).

Checked when a subscription is added and again before every attempt, since DNS can change.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from urllib.parse import urlsplit

from worker.errors import InputError

#: Cloud metadata endpoints, refused by name as well as by address.
METADATA_HOSTS = {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}
#: AWS/GCP/Azure/OpenStack metadata addresses (link-local anyway) and AWS's IPv6 one.
METADATA_ADDRESSES = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"),
                      ipaddress.ip_address("100.100.100.200")}

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to."""
    infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    return sorted({str(info[4][0]) for info in infos})


def check_url(url: str, *, allow_http: bool, allow_private: bool, resolver: Resolver = resolve) -> None:
    """Raise InputError naming what is wrong with ``url`` as a webhook target.

    Refused: anything but http(s); http unless ``allow_http``; credentials in the URL; a host that
    does not resolve; any resolved address that is loopback, private, link-local, multicast,
    reserved, unspecified or a metadata endpoint, unless ``allow_private``.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http"):
        raise InputError(f"webhook URL must be https:// (got {parts.scheme or 'no'} scheme)")
    if parts.scheme == "http" and not allow_http:
        raise InputError("webhook URL must use https (set POLLER_WEBHOOK_ALLOW_HTTP=true to allow http)")
    if not parts.hostname:
        raise InputError(f"webhook URL has no host: {url!r}")
    if parts.username or parts.password:
        raise InputError("webhook URL must not carry credentials; the signature authenticates us")
    if allow_private:
        return
    host = parts.hostname.lower().rstrip(".")
    if host in METADATA_HOSTS:
        raise InputError(f"webhook host {host} is a cloud metadata endpoint")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = resolver(host, port)
    except (OSError, ValueError) as err:
        raise InputError(f"webhook host {host} does not resolve ({err})") from None
    if not addresses:
        raise InputError(f"webhook host {host} does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        reason = _forbidden(address)
        if reason:
            raise InputError(f"webhook host {host} resolves to {address}, a {reason} address "
                             "(set POLLER_WEBHOOK_ALLOW_PRIVATE=true to allow it)")


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    for attr, label in (("is_loopback", "loopback"), ("is_link_local", "link-local"), ("is_private", "private"),
                        ("is_multicast", "multicast"), ("is_reserved", "reserved"),
                        ("is_unspecified", "unspecified")):
        if getattr(address, attr):
            return label
    if isinstance(address, ipaddress.IPv4Address) and address in ipaddress.ip_network("100.64.0.0/10"):
        return "carrier-grade NAT"
    return None
