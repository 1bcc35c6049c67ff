"""Bad requests get RFC 9457 problem documents that name what was wrong, and store nothing."""

from __future__ import annotations

import base64
import json
import socket

import pytest
import requests

from api.app import MAX_BODY_BYTES

#: What these tests check (argument parsing, messages, exit codes, problem documents) is above the
#: database; the service layer under them is tested on SQLite and PostgreSQL. One database keeps
#: the suite within its budget.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def assert_problem(r: requests.Response, status: int, name: str | None = None) -> dict:
    """The response is a problem document of ``status``, naming ``name`` when given."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    doc = r.json()
    assert doc["status"] == status and doc["title"] and doc["detail"], doc
    if name is not None:
        assert [p["name"] for p in doc["invalid_params"]] == [name], doc
        assert name in doc["detail"] or doc["invalid_params"][0]["reason"] == doc["detail"]
    return doc


def raw_request(api, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send exactly these bytes and read the answer (requests would not let a body lie about its size)."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=30) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk
        head_bytes, _, rest = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(rest) < int(headers.get("content-length", "0")):
            chunk = s.recv(65536)
            assert chunk
            rest += chunk
    return int(lines[0].split()[1]), headers, rest


def padded(size: int) -> bytes:
    """A JSON item of exactly ``size`` bytes (a ref far too long, so a 422 once it is read)."""
    shell = b'{"provider": "billit", "ref": ""}'
    return shell[:-2] + b"x" * (size - len(shell)) + b'"}'


# -- oversized bodies ------------------------------------------------------------------------------

def test_a_declared_body_over_10_mb_is_refused_before_it_is_sent(api):
    """The answer comes from the headers alone: the client has not sent a byte of the body."""
    status, headers, body = raw_request(api, (
        f"POST /v1/items/batch HTTP/1.1\nHost: x\nAuthorization: Bearer {api.key}\n"
        f"Content-Type: application/json\nContent-Length: {MAX_BODY_BYTES + 1}\n"))
    assert status == 413 and headers["content-type"] == "application/problem+json"
    doc = json.loads(body)
    assert doc["status"] == 413 and "10 MB" in doc["detail"]


def test_a_streamed_body_over_10_mb_is_refused(api):
    """Chunked, no length: counted as it arrives, refused once past the limit."""
    data = padded(MAX_BODY_BYTES + 1)

    def chunks():
        for i in range(0, len(data), 1 << 16):
            yield data[i:i + (1 << 16)]

    r = api.client().post("/v1/items", data=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in r.request.headers and r.request.headers["transfer-encoding"] == "chunked"
    assert_problem(r, 413)
    assert "10 MB" in r.json()["detail"]
    assert api.client().get("/v1/items").json()["data"] == []


@pytest.mark.parametrize("streamed", [False, True], ids=["declared", "streamed"])
def test_a_body_of_exactly_10_mb_is_read(api, streamed):
    """The limit is the limit: 10 MB is read (and refused for what it says, not for its size)."""
    data = padded(MAX_BODY_BYTES)
    assert len(data) == MAX_BODY_BYTES
    body = iter([data[:len(data) // 2], data[len(data) // 2:]]) if streamed else data
    r = api.client().post("/v1/items", data=body, headers={"Content-Type": "application/json"})
    assert_problem(r, 422, "ref")


# -- malformed requests, unknown routes and methods -------------------------------------------------

def test_malformed_json_is_422_naming_the_body(api):
    r = api.client().post("/v1/items", data=b'{"provider": "billit", "ref": ', headers={
        "Content-Type": "application/json"})
    doc = assert_problem(r, 422, "body")
    assert "malformed JSON" in doc["detail"]


def test_unknown_route_is_404(api):
    doc = assert_problem(api.client().get("/v1/nothing-here"), 404)
    assert "/v1/nothing-here" in doc["detail"]


def test_wrong_method_is_405_saying_which_are_taken(api):
    r = api.client().put("/v1/items", json={})
    doc = assert_problem(r, 405)
    assert r.headers["allow"] == "GET, POST" and "GET, POST" in doc["detail"] and "PUT" in doc["detail"]
    r = api.client().post("/v1/events", json={})
    assert_problem(r, 405)
    assert r.headers["allow"] == "GET"


# -- bad parameters, each named ----------------------------------------------------------------------

def test_limit_zero_names_limit(api):
    assert_problem(api.client().get("/v1/items", params={"limit": 0}), 422, "limit")


def test_label_without_colon_names_label(api):
    doc = assert_problem(api.client().get("/v1/items", params={"label": "nocolon"}), 422, "label")
    assert "key:value" in doc["detail"]


@pytest.mark.parametrize("cursor", [
    "zzz",
    base64.urlsafe_b64encode(b"snapshots:5").decode().rstrip("="),  # a real cursor, of another list
    base64.urlsafe_b64encode(b"items:-1").decode().rstrip("="),
    "Zm9vYmFy",
])
def test_a_cursor_from_nowhere_names_cursor(api, cursor):
    doc = assert_problem(api.client().get("/v1/items", params={"cursor": cursor}), 422, "cursor")
    assert "next_cursor" in doc["detail"]


@pytest.mark.parametrize("interval", [0.01, 0, -5, 31 * 24 * 3600 + 1])
def test_interval_outside_the_range_says_the_range(api, sim, interval):
    c = api.client()
    body = {"provider": "billit", "ref": str(sim.billit.create_order()), "interval_seconds": interval}
    doc = assert_problem(c.post("/v1/items", json=body), 422, "interval_seconds")
    assert "0.1 s to 31 days" in doc["detail"]
    assert c.get("/v1/items").json()["data"] == []
    item = c.post("/v1/items", json={**body, "interval_seconds": 60}).json()
    doc = assert_problem(c.patch(f"/v1/items/{item['id']}", json={"interval_seconds": interval}), 422,
                         "interval_seconds")
    assert "0.1 s to 31 days" in doc["detail"]
    assert c.get(f"/v1/items/{item['id']}").json()["interval_seconds"] == 60


@pytest.mark.parametrize(("body", "name", "says"), [
    ({"provider": "acme-invoices", "ref": "1"}, "provider", "unknown provider 'acme-invoices'"),
    ({"provider": "billit", "ref": "12ab"}, "ref", "numeric OrderID"),
    ({"provider": "billit", "ref": "-4"}, "ref", "numeric OrderID"),
    ({"provider": "billit", "ref": "1", "kind": "invoice"}, "kind", "no kind 'invoice'"),
    ({"provider": "billit"}, "ref", "required"),
    ({"provider": "billit", "ref": "1", "color": "red"}, "color", "not permitted"),
])
def test_what_the_provider_cannot_have_is_named(api, body, name, says):
    c = api.client()
    doc = assert_problem(c.post("/v1/items", json=body), 422, name)
    assert says in doc["detail"], doc
    assert c.get("/v1/items").json()["data"] == []
