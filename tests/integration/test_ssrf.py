"""Issue 9 #14: the SSRF guard judges IPv4 addresses hidden in IPv6 ones, gives link-local and
metadata addresses no switch, and the connection goes to the address that was checked (DNS
rebinding), with the Host header, SNI and certificate check still for the name."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.peer import Answer, Peer
from tests.stack import Stack
from worker.delivery import DeliveryPolicy
from worker.errors import InputError, TargetRefused
from worker.http_transport import new_session
from worker.webhooks.sender import WebhookSender
from worker.webhooks.urls import check_url


def resolving_to(*addresses: str):
    return lambda host, port: list(addresses)


@pytest.mark.parametrize("address, reason", [
    ("2002:7f00:1::", "loopback"),                           # 6to4 of 127.0.0.1
    ("2002:a00:1::", "private"),                             # 6to4 of 10.0.0.1
    ("64:ff9b::7f00:1", "loopback"),                         # NAT64 of 127.0.0.1
    ("64:ff9b::c0a8:105", "private"),                        # NAT64 of 192.168.1.5
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),    # Teredo, client 127.0.0.1
    ("::7f00:1", "loopback"),                                # IPv4-compatible
    ("::ffff:7f00:1", "loopback"),                           # IPv4-mapped
    ("::ffff:0:a00:1", "private"),                           # IPv4-translated (SIIT)
    ("fec0::1", "site-local"),
    ("fd12:3456::1", "unique-local"),
    ("0.1.2.3", "this-network"),
    ("0.0.0.0", "unspecified"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("::", "unspecified"),
    ("::1", "loopback"),
])
def test_private_addresses_in_every_disguise_are_refused(address, reason):
    """Issue 9 #14: an IPv4 address embedded in an IPv6 one is judged as what it reaches, and
    site-local, unique-local and 0.0.0.0/8 are refused unless POLLER_WEBHOOK_ALLOW_PRIVATE."""
    with pytest.raises(TargetRefused, match=f"a {reason} address .*POLLER_WEBHOOK_ALLOW_PRIVATE") as err:
        check_url("https://hooks.example/x", allow_http=False, allow_private=False, resolver=resolving_to(address))
    assert err.value.setting == "POLLER_WEBHOOK_ALLOW_PRIVATE"
    assert check_url("https://hooks.example/x", allow_http=False, allow_private=True,
                     resolver=resolving_to(address)) == [address]


@pytest.mark.parametrize("address, reason", [
    ("169.254.169.254", "cloud metadata"),
    ("169.254.1.1", "link-local"),
    ("fe80::1", "link-local"),
    ("fd00:ec2::254", "cloud metadata"),
    ("100.100.100.200", "cloud metadata"),
    ("::ffff:a9fe:a9fe", "cloud metadata"),        # mapped 169.254.169.254
    ("2002:a9fe:a9fe::", "cloud metadata"),        # 6to4 of it
    ("64:ff9b::a9fe:101", "link-local"),           # NAT64 of 169.254.1.1
])
def test_link_local_and_metadata_have_no_switch(address, reason):
    """Issue 9 #14: POLLER_WEBHOOK_ALLOW_PRIVATE does not open link-local or metadata addresses."""
    with pytest.raises(TargetRefused, match=f"a {reason} address.*\\(no setting allows it\\)") as err:
        check_url("http://hooks.example/x", allow_http=True, allow_private=True, resolver=resolving_to(address))
    assert err.value.setting is None


@pytest.mark.parametrize("host", ["metadata.google.internal", "metadata.goog", "METADATA.google.internal."])
def test_metadata_names_have_no_switch(host):
    """Issue 9 #14: metadata host names are refused with POLLER_WEBHOOK_ALLOW_PRIVATE set too."""
    with pytest.raises(TargetRefused, match="cloud metadata endpoint"):
        check_url(f"http://{host}/x", allow_http=True, allow_private=True, resolver=resolving_to("93.184.216.34"))


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "2002:5db8:d822::"])
def test_public_addresses_pass_and_are_returned_for_pinning(address):
    """Issue 9 #14: public addresses (a 6to4 of a public one too) pass; the checked list comes back."""
    assert check_url("https://hooks.example/x", allow_http=False, allow_private=False,
                     resolver=resolving_to(address)) == [address]


def test_unresolvable_host_is_refused_without_allow_private():
    """A host that does not resolve is an InputError, not a policy refusal."""
    def fails(host, port):
        raise OSError("no such host")
    with pytest.raises(InputError, match="does not resolve") as err:
        check_url("https://nowhere.example/x", allow_http=False, allow_private=False, resolver=fails)
    assert not isinstance(err.value, TargetRefused)


@pytest.fixture
def two_hosts():
    """Two peers on one port: 127.0.0.2 (the address DNS gave the check) and 127.0.0.1 (where
    'localhost' resolves on a second lookup: the internal service a rebinding attack wants)."""
    with Peer(lambda r: Answer(body={"checked": True}), host="127.0.0.2") as checked:
        with Peer(lambda r: Answer(body={"internal": True}), host="127.0.0.1", port=checked.port) as internal:
            yield checked, internal


def test_delivery_connects_to_the_checked_address(engine, sim, clock, two_hosts):
    """Issue 9 #14: DNS rebinding. The delivery-time check resolves 'localhost' to 127.0.0.2; the
    system resolver would say 127.0.0.1. The request goes to 127.0.0.2, with Host: localhost."""
    checked, internal = two_hosts
    stack = Stack(engine, sim, clock, policy=DeliveryPolicy(allow_http=True, allow_private=True))
    stack.subs.add(f"http://localhost:{checked.port}/hook")
    stack.delivery.resolver = resolving_to("127.0.0.2")
    stack.orders(1, stages=0)
    stack.deliver()
    assert internal.requests == []
    (request,) = checked.requests
    assert request.path == "/hook" and request.headers["host"] == f"localhost:{checked.port}"


def _certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return cert_path, context


def test_pinned_https_keeps_sni_and_certificate_check_for_the_name(tmp_path):
    """Issue 9 #14: pinned to 127.0.0.2, an https send still sends SNI 'localhost' and verifies the
    certificate for 'localhost'; a pin to an address whose certificate does not match fails."""
    cert_path, context = _certificate(tmp_path)
    with Peer(lambda r: Answer(body={"ok": True}), host="127.0.0.2", tls=context) as peer:
        session = new_session()
        session.trust_env, session.verify = False, str(cert_path)  # REQUESTS_CA_BUNDLE would win
        sender = WebhookSender(timeout_s=5, session=session)
        result = sender.post(f"https://localhost:{peer.port}/hook", b"{}", {}, addresses=["127.0.0.2"])
        assert result.ok, result.error
        assert peer.server_names == ["localhost"]
        assert peer.requests[0].headers["host"] == f"localhost:{peer.port}"
        # The same peer reached by its address: the certificate is for localhost, not for 127.0.0.2.
        sender = WebhookSender(timeout_s=5, session=new_session())
        sender.session.trust_env, sender.session.verify = False, str(cert_path)
        failed = sender.post(f"https://127.0.0.2:{peer.port}/hook", b"{}", {}, addresses=["127.0.0.2"])
        assert not failed.ok and "SSLError" in (failed.error or "")
    assert ipaddress.ip_address("127.0.0.2").is_loopback
