"""`poller keys create|list|revoke` against a running API, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import cli_env, poller

#: What these tests check (argument parsing, messages, exit codes, problem documents) is above the
#: database; the service layer under them is tested on SQLite and PostgreSQL. One database keeps
#: the suite within its budget.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def test_keys_create_list_revoke_and_a_revoked_key_gets_401(api, tmp_path):
    """A key is printed once as the last word, works at once, is listed without its secret, and
    is refused (401) as soon as it is revoked; a read-only key may read, not write."""
    env = cli_env(api.settings.resolved_database_url(), tmp_path / "var")
    made = poller(env, "keys", "create", "ci").stdout
    key = made.split()[-1]
    assert key.startswith("spk_") and '"ci" (read-write)' in made
    reader = poller(env, "keys", "create", "dashboards", "--read-only").stdout
    read_key = reader.split()[-1]
    assert "(read-only)" in reader

    assert api.client(key).get("/v1/items").status_code == 200
    assert api.client(key).post("/v1/items", json={"provider": "nope", "ref": "1"}).status_code == 422
    assert api.client(read_key).get("/v1/items").status_code == 200
    assert api.client(read_key).post("/v1/items", json={"provider": "billit", "ref": "1"}).status_code == 403

    listed = poller(env, "keys", "list", "--json").stdout
    table = poller(env, "keys", "list").stdout
    assert key not in listed + table and read_key not in listed + table
    rows = {r["name"]: r for r in json.loads(listed)}
    assert set(rows["ci"]) == {"id", "name", "prefix", "read_only", "created_at", "last_used_at", "revoked_at"}
    assert key.startswith(rows["ci"]["prefix"]) and len(rows["ci"]["prefix"]) < len(key) // 2
    assert (rows["ci"]["read_only"], rows["dashboards"]["read_only"]) == (False, True)
    assert rows["ci"]["last_used_at"] and rows["ci"]["revoked_at"] is None
    assert table.splitlines()[0].split() == ["ID", "NAME", "PREFIX", "ACCESS", "CREATED", "LAST", "USED", "REVOKED"]

    assert poller(env, "keys", "revoke", "ci").stdout.strip() == f'revoked key {rows["ci"]["id"]} "ci"'
    refused = api.client(key).get("/v1/items")
    assert refused.status_code == 401 and refused.headers["content-type"].startswith("application/problem+json")
    assert api.client(read_key).get("/v1/items").status_code == 200  # the others still work
    revoked = {r["name"]: r for r in json.loads(poller(env, "keys", "list", "--json").stdout)}["ci"]
    assert revoked["revoked_at"]
    # By id too; a key already revoked, or none at all, is an error naming what was asked for.
    assert poller(env, "keys", "revoke", str(rows["dashboards"]["id"])).returncode == 0
    assert api.client(read_key).get("/v1/items").status_code == 401
    for ref in ("ci", "999"):
        proc = poller(env, "keys", "revoke", ref, ok=False)
        assert proc.returncode == 2 and f"no live API key has id or name '{ref}'" in proc.stderr, proc.stderr


def test_a_key_needs_a_name(api, tmp_path):
    """An empty name is refused (exit 2) and no key is made."""
    env = cli_env(api.settings.resolved_database_url(), tmp_path / "var")
    before = poller(env, "keys", "list", "--json").stdout
    proc = poller(env, "keys", "create", " ", ok=False)
    assert proc.returncode == 2 and "a key's name must be 1 to 80 characters" in proc.stderr
    assert "spk_" not in proc.stdout
    assert poller(env, "keys", "list", "--json").stdout == before
