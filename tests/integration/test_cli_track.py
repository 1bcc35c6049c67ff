"""`poller track` as a script runs it, on SQLite and PostgreSQL: idempotent, with labels and an
external id, stdout only the id."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_cli import cli_env, poller

#: What these tests check (argument parsing, messages, exit codes, problem documents) is above the
#: database; the service layer under them is tested on SQLite and PostgreSQL. One database keeps
#: the suite within its budget.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


@pytest.fixture
def env(db_url, tmp_path) -> dict[str, str]:
    return cli_env(db_url, tmp_path / "var")


def items(env) -> list[dict]:
    return json.loads(poller(env, "items", "--json").stdout)


def test_track_again_prints_the_same_id_and_updates_what_is_given(env):
    """The same provider/account/kind/ref again: exit 0, the same id alone on stdout, one row;
    --interval, --label and --external-id given again replace the stored ones, left out keep them."""
    first = poller(env, "track", "billit", "1001", "--label", "customer=acme", "--label", "team=ar",
                   "--external-id", "INV-1")
    assert first.stdout == "1\n"
    again = poller(env, "track", "billit", "1001")
    assert again.stdout == "1\n"
    assert "already tracked as item 1" in again.stderr
    [row] = items(env)
    assert (row["labels"], row["external_id"], row["interval_seconds"]) == (
        {"customer": "acme", "team": "ar"}, "INV-1", 300.0)
    changed = poller(env, "track", "billit", "1001", "--kind", "order", "--account", "default",
                     "--interval", "60", "--label", "customer=globex")
    assert changed.stdout == "1\n"
    [row] = items(env)
    assert (row["id"], row["labels"], row["external_id"], row["interval_seconds"]) == (
        1, {"customer": "globex"}, "INV-1", 60.0)
    assert poller(env, "track", "billit", "1002", "--label", "k=a=b").stdout == "2\n"  # the value keeps its `=`
    assert [(r["id"], r["labels"]) for r in items(env)] == [(1, {"customer": "globex"}), (2, {"k": "a=b"})]


def test_a_refused_track_changes_nothing_already_stored(env):
    """A malformed --label or an interval out of range on a tracked item: exit 2, the item unchanged."""
    poller(env, "track", "billit", "1001", "--label", "customer=acme", "--interval", "30")
    for args, message in ((("--label", "customer"), "--label 'customer' must be key=value"),
                          (("--interval", "0.01"), "--interval must be 0.1 s to 31 days, got 0.01 s"),
                          (("--label", "Ω=x"), "label key 'Ω' must be"),
                          (("--external-id", "x" * 201), "external_id must be 1 to 200 characters")):
        proc = poller(env, "track", "billit", "1001", "--label", "customer=other", *args, ok=False)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert proc.stdout == "" and "Traceback" not in proc.stderr
    [row] = items(env)
    assert (row["labels"], row["interval_seconds"]) == ({"customer": "acme"}, 30.0)


def test_webhooks_add_takes_label_filters(env):
    """`webhooks add --label` makes the same labelled subscription as the API; a malformed one is refused."""
    env = {**env, "POLLER_WEBHOOK_ALLOW_HTTP": "true", "POLLER_WEBHOOK_ALLOW_PRIVATE": "true"}
    out = poller(env, "webhooks", "add", "http://127.0.0.1:9/hook", "--label", "customer=acme", "--label", "team=ar")
    assert out.stdout.startswith("subscription 1\n")
    [sub] = json.loads(poller(env, "webhooks", "list", "--json").stdout)
    assert sub["labels"] == {"customer": "acme", "team": "ar"}
    bad = poller(env, "webhooks", "add", "http://127.0.0.1:9/other", "--label", "customer", ok=False)
    assert bad.returncode == 2 and "--label 'customer' must be key=value" in bad.stderr
    assert len(json.loads(poller(env, "webhooks", "list", "--json").stdout)) == 1
