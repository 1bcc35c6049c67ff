"""Issue 9 #13: every item ref is validated per provider before it is stored, and a ref used in a
path must be exactly one path segment (``..`` would send our credentials to another resource)."""

from __future__ import annotations

import pytest

from worker.errors import InputError
from worker.providers.amili_ada import AmiliAdaProvider, AmiliAdaSettings
from worker.providers.amili_arm import AmiliArmProvider, AmiliArmSettings
from worker.providers.amili_collection import AmiliCollectionProvider, AmiliCollectionSettings
from worker.providers.amili_distribution import AmiliDistributionProvider, AmiliDistributionSettings
from worker.providers.base import ProviderContext
from worker.providers.billit import BillitProvider, BillitSettings
from worker.providers.refs import segment

CTX = ProviderContext()
PROVIDERS = {
    "billit": BillitProvider(BillitSettings(), "default", CTX),
    "amili_collection": AmiliCollectionProvider(AmiliCollectionSettings(), "default", CTX),
    "amili_ada": AmiliAdaProvider(AmiliAdaSettings(), "default", CTX),
    "amili_arm": AmiliArmProvider(AmiliArmSettings(), "default", CTX),
    "amili_distribution": AmiliDistributionProvider(AmiliDistributionSettings(), "default", CTX),
}
#: (provider, kind) pairs whose ref becomes a path segment.
IN_PATH = [("billit", "order"), ("amili_collection", "invoice"), ("amili_collection", "batch"),
           ("amili_ada", "case"), ("amili_arm", "batch")]
#: Refs sent in a query or a JSON body.
NOT_IN_PATH = [("amili_collection", "case"), ("amili_ada", "invoice"), ("amili_distribution", "identifier"),
               ("amili_distribution", "invoice_number")]
PATH_TRICKS = ["..", ".", "...", "a/b", "../x", "%2e%2e", "%2F", "a\\b", "a b", "a\tb", ""]
EVERYWHERE_BAD = ["", "   ", "a\x00b", "a\nb", "a\rb", "\x7f", "a\u200bb", "x" * 201]


@pytest.mark.parametrize("provider, kind", IN_PATH)
@pytest.mark.parametrize("ref", PATH_TRICKS + EVERYWHERE_BAD)
def test_path_refs_refuse_path_tricks(provider, kind, ref):
    """Issue 9 #13: `..`, `.`, `a/b`, `%2e%2e`, a backslash, whitespace or a control character is
    refused with an InputError naming the provider, kind and ref."""
    with pytest.raises(InputError) as err:
        PROVIDERS[provider].validate_ref(kind, ref)
    assert str(err.value).startswith(f"{provider} {kind} ref ") and str(err.value).endswith(f", got {ref!r}")


@pytest.mark.parametrize("provider, kind", NOT_IN_PATH)
@pytest.mark.parametrize("ref", EVERYWHERE_BAD)
def test_query_and_body_refs_refuse_control_characters_and_empty(provider, kind, ref):
    """Issue 9 #13/#16: Amili refs sent in a query or body are checked too (control characters,
    empty, too long), naming the ref."""
    with pytest.raises(InputError, match=f"{provider} {kind} ref"):
        PROVIDERS[provider].validate_ref(kind, ref)


@pytest.mark.parametrize("provider, kind", NOT_IN_PATH)
def test_query_and_body_refs_keep_spaces_and_slashes(provider, kind):
    """Invoice numbers such as ``INV 2024/17`` are legitimate where the ref is not a path segment."""
    assert PROVIDERS[provider].validate_ref(kind, " INV 2024/17 ") == "INV 2024/17"


@pytest.mark.parametrize("ref", ["12a", "1.5", "-3", "0", "00", "1²", "١٢", "+7", "1e3", "9" * 19])
def test_billit_order_id_is_a_positive_ascii_integer(ref):
    """Issue 9 #13: a Billit OrderID is an integer; unicode digits ("1²" crashed int()) are refused."""
    with pytest.raises(InputError, match="numeric OrderID"):
        PROVIDERS["billit"].validate_ref("order", ref)


def test_billit_order_id_is_canonical():
    assert PROVIDERS["billit"].validate_ref("order", " 001001 ") == "1001"


@pytest.mark.parametrize("provider, kind, ref", [
    ("amili_collection", "invoice", "3fa85f64-5717-4562-b3fc-2c963f66afa6"),
    ("amili_collection", "batch", "b#1?x;ø"),
    ("amili_ada", "case", "5f1c0c2e8a1b2c3d4e5f6a7b"),
    ("amili_arm", "batch", "2b6f0cc9-04b5-4c31-9d2e-6a1f0e1d9b1c"),
])
def test_ordinary_and_odd_but_harmless_ids_pass(provider, kind, ref):
    """Tolerant where the docs are vague: UUIDs, ObjectIds and odd characters that encode safely."""
    assert PROVIDERS[provider].validate_ref(kind, ref) == ref


@pytest.mark.parametrize("ref, encoded", [("b#1?x;ø", "b%231%3Fx%3B%C3%B8"), ("A+B:C@D", "A%2BB%3AC%40D"),
                                          ("x.y", "x.y")])
def test_segment_encodes_one_path_segment(ref, encoded):
    """Issue 9 #13: every reserved character is percent-encoded (quote with safe="")."""
    assert segment("amili_collection", "invoice", ref) == encoded


@pytest.mark.parametrize("ref", ["..", "a/b", "%2e%2e"])
def test_segment_refuses_stored_refs_that_predate_the_check(ref):
    """Issue 9 #13: an item tracked before refs were checked is never requested with ``..``."""
    with pytest.raises(InputError, match="amili_arm batch ref"):
        segment("amili_arm", "batch", ref)
