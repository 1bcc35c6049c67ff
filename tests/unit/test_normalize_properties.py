"""Every normalizer, fed arbitrary JSON, returns a document or raises the project's own error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ProviderResponseInvalid
from worker.providers import amili_ada, amili_arm, amili_collection, amili_distribution, billit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)

billit_keys = st.sampled_from(["OrderID", "OrderStatus", "CurrentDocumentDeliveryDetails", "Messages",
                               "DocumentDeliveryStatus", "Description", "MessageDirection"])
billit_like = st.dictionaries(billit_keys | st.text(max_size=8), json_values, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.one_of(json_values, billit_like))
def test_billit_normalize_total(raw):
    """billit.normalize never crashes with a foreign exception."""
    try:
        doc = billit.normalize(raw)
    except ProviderResponseInvalid:
        return
    assert isinstance(doc.status, str) and isinstance(doc.terminal, bool)
    json.dumps(doc.fields)  # storable


NORMALIZERS = {
    "amili_distribution": amili_distribution.normalize,
    "amili_collection.invoice": amili_collection.normalize_invoice,
    "amili_collection.batch": amili_collection.normalize_batch,
    "amili_ada": amili_ada.normalize,
    "amili_arm": amili_arm.normalize,
}
wrapped = st.fixed_dictionaries({}, optional={"data": json_values, "httpStatus": st.sampled_from([200, 202, 206, 500]),
                                               "body": json_values, "Status": json_values, "Transaction": json_values,
                                               "_id": json_values, "closed": json_values})


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(NORMALIZERS)), st.one_of(json_values, wrapped))
def test_every_normalizer_total(name, raw):
    """Each provider's normalizer returns a document or raises ProviderResponseInvalid."""
    try:
        doc = NORMALIZERS[name](raw)
    except ProviderResponseInvalid:
        return
    assert isinstance(doc.status, str) and isinstance(doc.terminal, bool)
    json.dumps(doc.fields)
