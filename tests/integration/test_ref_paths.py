"""Issue 9 #13: each adapter puts a ref into its request path as exactly one encoded segment.

A loopback peer records the raw request line, so what is asserted is what went over the wire.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.peer import Answer, Peer, Request
from worker.domain import ItemRef
from worker.errors import InputError
from worker.providers.amili_ada import AmiliAdaProvider, AmiliAdaSettings
from worker.providers.amili_arm import AmiliArmProvider, AmiliArmSettings
from worker.providers.amili_collection import AmiliCollectionProvider, AmiliCollectionSettings
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitProvider, BillitSettings

CTX = ProviderContext(http=HttpOptions(timeout_s=5))
ODD = "b#1?x;ø"
ENCODED = "b%231%3Fx%3B%C3%B8"


def answer(request: Request) -> Answer:
    if request.path.startswith(("/token", "/authenticates/")):
        return Answer(body={"access_token": "tok", "token": "tok", "expires_in": 3600})
    if request.path.startswith("/clients/"):
        return Answer(status=202, body={})
    if request.path.startswith("/cases/"):
        return Answer(body={"_id": "c1", "_etag": "e1", "status": "open"})
    return Answer(body={"data": {"id": "x", "status": "OPEN"}, "OrderID": 7})


@pytest.fixture
def peer():
    with Peer(answer) as p:
        yield p


def _ada_key() -> str:
    key = ec.generate_private_key(ec.SECP521R1())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def adapters(url: str) -> dict[str, object]:
    return {
        "amili_collection": AmiliCollectionProvider(AmiliCollectionSettings(
            base_url=url, auth_url=url, client_id="c", client_secret="s", org_id="org 1"), "default", CTX),
        "amili_ada": AmiliAdaProvider(AmiliAdaSettings(base_url=url, api_code="code", private_key=_ada_key()),
                                      "default", CTX),
        "amili_arm": AmiliArmProvider(AmiliArmSettings(base_url=url, client_no="42", token="t"), "default", CTX),
        "billit": BillitProvider(BillitSettings(base_url=url, api_key="k", party_id="1"), "default", CTX),
    }


@pytest.mark.parametrize("provider, kind, ref, path", [
    ("amili_collection", "invoice", ODD, f"/orgs/org%201/invoices/{ENCODED}"),
    ("amili_collection", "batch", ODD, f"/orgs/org%201/batches/{ENCODED}"),
    ("amili_ada", "case", ODD, f"/cases/{ENCODED}"),
    ("amili_arm", "batch", ODD, f"/clients/42/batches/{ENCODED}"),
    ("billit", "order", "7", "/v1/orders/7"),
])
def test_fetch_requests_the_ref_as_one_encoded_segment(peer, provider, kind, ref, path):
    """Issue 9 #13: an odd but allowed ref is sent percent-encoded as a single path segment."""
    adapter = adapters(peer.url())[provider]
    assert adapter.validate_ref(kind, ref) == ref  # type: ignore[attr-defined]
    adapter.fetch(ItemRef(1, provider, "default", kind, ref), None)  # type: ignore[attr-defined]
    assert peer.requests[-1].path == path


@pytest.mark.parametrize("provider, kind", [("amili_collection", "invoice"), ("amili_collection", "batch"),
                                            ("amili_ada", "case"), ("amili_arm", "batch"), ("billit", "order")])
@pytest.mark.parametrize("ref", ["..", "../../v1/orders", "a/b"])
def test_a_stored_path_trick_is_never_requested(peer, provider, kind, ref):
    """Issue 9 #13: a ref stored before refs were checked fails the poll with an InputError; no
    request (and no credential) goes to another path."""
    adapter = adapters(peer.url())[provider]
    with pytest.raises(InputError, match=f"{provider} {kind} ref"):
        adapter.fetch(ItemRef(1, provider, "default", kind, ref), None)  # type: ignore[attr-defined]
    assert [r for r in peer.requests if not r.path.startswith(("/token", "/authenticates/"))] == []
