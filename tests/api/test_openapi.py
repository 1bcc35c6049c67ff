"""The OpenAPI document the app serves: valid OpenAPI 3.1, and every route of the app is in it."""

from __future__ import annotations

from fastapi.routing import iter_route_contexts
from openapi_spec_validator import validate

#: The document and its viewer describe the API; they are not part of it.
NOT_DOCUMENTED = {"/openapi.json", "/docs", "/docs/oauth2-redirect"}


def served_routes(app) -> set[tuple[str, str]]:
    """(path, method) of every route the app answers, included routers flattened."""
    out = set()
    for route in iter_route_contexts(app.routes):
        if route.path in NOT_DOCUMENTED or not route.methods:
            continue
        # Starlette answers HEAD wherever it answers GET; OpenAPI leaves that implicit.
        out |= {(route.path, m.lower()) for m in route.methods if m != "HEAD"}
    return out


def refs(node) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for v in node.values() for r in refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in refs(v)]
    return []


def test_the_document_is_valid_openapi_3_1(api):
    r = api.client(None).get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on anything invalid
    schemas = doc["components"]["schemas"]
    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    assert {"ItemIn", "Problem", "Event", "EventPage"} <= set(schemas)
    batch = doc["paths"]["/v1/items/batch"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert refs(batch)  # the batch body names what an entry is


def test_every_route_of_the_app_is_in_the_document(api):
    app = api.server.config.app
    doc = api.client(None).get("/openapi.json").json()
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    served = served_routes(app)
    assert len(served) > 10
    assert served - documented == set()
    assert documented - served == set()


def test_v1_routes_document_their_problems(api):
    """A client generator learns the error shape and the statuses from the document."""
    doc = api.client(None).get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, op in ops.items():
            assert {"401", "422"} <= set(op["responses"]), (method, path)
            assert "application/problem+json" in op["responses"]["401"]["content"], (method, path)
            assert op.get("summary") and op.get("description"), (method, path)


def test_docs_serves_html_that_loads_the_document(api):
    r = api.client(None).get("/docs")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in r.text and "swagger" in r.text.lower()


def test_every_route_is_in_docs_api_md_with_an_example(api):
    """docs/api.md lists every route of the app, and shows each path in a curl example."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "api.md").read_text()
    shape = lambda path: re.sub(r"\{[^}]+\}", "{}", path)  # noqa: E731 - {item_id} in the app, {id} in the docs
    listed = {shape(p) for p in re.findall(r"`(?:[A-Z, ]+ )?(/[^`? ]*)", text)}
    examples = {shape(re.sub(r"/(\d+|evt_\w+)(?=/|$)", "/{}", p))
                for p in re.findall(r"curl [^\n]*?http://127\.0\.0\.1:8000(/[^'\"?\s]*)", text)}
    paths = {shape(path) for path, _ in served_routes(api.server.config.app)}
    assert paths - listed == set()
    assert {p for p in paths if p.startswith("/v1")} - examples == set()
