"""Every normalizer, fed arbitrary JSON, returns a document or raises the project's own error."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.errors import ProviderResponseInvalid
from worker.providers import billit

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
