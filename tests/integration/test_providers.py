"""Each provider through its whole life over real HTTP against the simulator, with its auth flow.

Time: one clock drives our scheduling and our view of token expiry; it starts at the real wall
time because the simulator's token services stamp expiry in wall time.
"""

from __future__ import annotations

import threading

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from tests.integration.conftest import billit_oauth_settings, first_poll_error, provider_service
from worker.providers.amili_ada import AmiliAdaSettings
from worker.providers.amili_distribution import AmiliDistributionSettings
from worker.providers.billit import BillitSettings
from worker.store.db import make_sessionmaker
from worker.store.models import Credential

STAGE = 10.0
def poll_round(service) -> int:
    return service.dispatch_due(service.poll_claims, lease_s=30, limit=1000, chunk_size=10)


def live(service, sim, wall, rounds: int) -> None:
    """Poll, then move the simulator one stage and our clock past the interval, ``rounds`` times."""
    for _ in range(rounds):
        poll_round(service)
        sim.clock.advance(STAGE)
        wall.advance(6)


def statuses(service, item_id: int) -> list[tuple[str, str]]:
    return [(e.type, e.data["status"]) for e in service.events_after(0) if e.item_id == item_id]


def changed(*names: str) -> list[tuple[str, str]]:
    return [("status.observed" if n == 0 else "status.changed", s) for n, s in enumerate(names)]


# -- Amili Distribution (pstatus) -------------------------------------------------------------

def dist_settings(sim, **kw) -> dict:
    return {"amili_distribution": AmiliDistributionSettings(base_url=sim.url, **kw)}


@pytest.mark.parametrize(("scenario", "life"), [
    ("ok", ["new", "queued", "awaiting_response", "ok"]),
    ("failed", ["new", "queued", "failed"]),
])
def test_distribution_life(engine, sim, wall, scenario, life):
    """pstatus from New to a final transaction status, by identifier and by invoice number."""
    service = provider_service(engine, wall, dist_settings(sim))
    ident = sim.amili_distribution.create_invoice(identifier="INV-ID-1", invoice_no="70001", scenario=scenario)
    by_id = service.track("amili_distribution", ident, interval_s=5).id
    by_no = service.track("amili_distribution", "70001", interval_s=5, kind="invoice_number").id
    live(service, sim, wall, 6)
    assert statuses(service, by_id) == changed(*life) == statuses(service, by_no)
    assert {i.state for i in service.items()} == {"terminal"}


def test_distribution_bearer_token_when_configured(engine, tmp_path, wall):
    """A deployment behind a token sends it; a wrong one is a clear, non-retryable 401."""
    from simulator.server import Simulator, SimulatorConfig

    cfg = SimulatorConfig(port=0, speed=0, seed_orders=0, options={"amili_distribution_token": "t0k"})
    with Simulator(cfg).start() as sim:
        sim.amili_distribution.create_invoice(identifier="A")
        good = provider_service(engine, wall, dist_settings(sim, token=SecretStr("t0k")))
        good.track("amili_distribution", "A", interval_s=5)
        poll_round(good)
        assert statuses(good, 1) == changed("new")
        bad = provider_service(engine, wall, {"amili_distribution": AmiliDistributionSettings(
            base_url=sim.url, token=SecretStr("nope"), accounts={"other": {}})})
        bad.track("amili_distribution", "A", interval_s=5, account="other")
        poll_round(bad)
        item = next(i for i in bad.items() if i.account == "other")
        assert "answered 401: Authorization has been denied" in item.last_error and "nope" not in item.last_error


def test_distribution_unknown_invoice_is_gone(engine, sim, wall):
    """404 from pstatus marks the item gone."""
    service = provider_service(engine, wall, dist_settings(sim))
    service.track("amili_distribution", "NO-SUCH", interval_s=5)
    poll_round(service)
    assert [e.type for e in service.events_after(0)] == ["item.gone"]


# -- Amili Sweden (ADA) ------------------------------------------------------------------------

def ada_settings(sim) -> dict:
    ada = sim.amili_ada
    return {"amili_ada": AmiliAdaSettings(base_url=sim.url, api_code=SecretStr("sim-ada-api-code"),
                                          private_key_file=ada.private_key_path, algorithm="ES512")}


@pytest.fixture
def ada_sim(sim, wall):
    # The fake's wall clock follows ours, so token expiry can be reached without sleeping.
    sim.amili_ada.wall_time = lambda: wall().timestamp()
    return sim


def test_ada_case_life_by_id_and_by_invoice_number(engine, ada_sim, wall):
    """A case from initializing to closed, found by id and by creditor invoice number; one
    access token serves every poll."""
    sim = ada_sim
    service = provider_service(engine, wall, ada_settings(sim))
    case_id = sim.amili_ada.create_case(invoice_number="INV-77", scenario="paid")
    by_id = service.track("amili_ada", case_id, interval_s=5).id
    by_no = service.track("amili_ada", "INV-77", interval_s=5, kind="invoice").id
    live(service, sim, wall, 7)
    life = changed("initializing", "initialized", "debt_collection_active", "debt_collection_active", "closed")
    assert statuses(service, by_id) == life == statuses(service, by_no)
    last = [e for e in service.events_after(0) if e.item_id == by_id][-1]
    assert last.data["terminal"] and last.data["snapshot"]["closed"]["reason"] == "paid"
    assert sim.amili_ada.tokens_issued == 1
    item = next(i for i in service.items() if i.id == by_id)
    assert item.version  # the _etag, sent back as If-None-Match


def test_ada_reauthenticates_on_expiry_and_on_401(engine, ada_sim, wall):
    """An expired token is replaced before use; a revoked one costs one retry, not a failure."""
    sim = ada_sim
    service = provider_service(engine, wall, ada_settings(sim))
    service.track("amili_ada", sim.amili_ada.create_case(), interval_s=5)
    poll_round(service)
    assert sim.amili_ada.tokens_issued == 1
    wall.advance(sim.config.token_ttl_seconds + 60)
    poll_round(service)
    assert sim.amili_ada.tokens_issued == 2
    sim.amili_ada.expire_tokens()
    wall.advance(6)
    poll_round(service)
    assert sim.amili_ada.tokens_issued == 3
    (item,) = service.items()
    assert item.consecutive_failures == 0 and item.last_error is None


def test_ada_wrong_key_is_a_clear_error_without_the_key(engine, ada_sim, wall, tmp_path):
    """A private key the provider does not know: 401, named, and the key never quoted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP521R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    settings = {"amili_ada": AmiliAdaSettings(base_url=ada_sim.url, api_code=SecretStr("sim-ada-api-code"),
                                              private_key=SecretStr(other))}
    service = provider_service(engine, wall, settings)
    error = first_poll_error(service, "amili_ada", ada_sim.amili_ada.create_case())
    assert "/authenticates/api-code answered 401" in error
    assert "PRIVATE KEY" not in error and other.splitlines()[1] not in error


# -- Billit OAuth2 with a rotating refresh token -----------------------------------------------

def test_billit_oauth_life_token_reused_and_rotation_persisted(engine, oauth_sim, wall):
    """An order's life over bearer auth: one refresh for many polls, the rotated refresh token
    stored in the database (not the seed), and used again after a restart."""
    sim = oauth_sim
    service = provider_service(engine, wall, billit_oauth_settings(sim))
    sim.billit.create_order(1001)
    item = service.track("billit", "1001", interval_s=5).id
    live(service, sim, wall, 6)
    assert statuses(service, item) == changed("to_send", "pending_delivery", "delivered", "received", "paid")
    assert sim.billit.refreshes_ok == 1
    with make_sessionmaker(engine).begin() as s:
        stored = s.scalar(select(Credential).where(Credential.key == "billit:default"))
        assert stored.refresh_token == sim.billit.current_refresh_token != "sim-billit-refresh-0"
    # A restarted worker (new adapters, same database and seed setting) refreshes with the stored token.
    restarted = provider_service(engine, wall, billit_oauth_settings(sim))
    sim.billit.create_order(1002)
    sim.billit.expire_tokens()
    restarted.track("billit", "1002", interval_s=5)
    poll_round(restarted)
    assert sim.billit.refreshes_ok == 2 and sim.billit.refreshes_rejected == 0
    assert [i.last_error for i in restarted.items()] == [None, None]


def test_billit_two_workers_refreshing_at_once_spend_the_token_once(engine, oauth_sim, wall):
    """Two workers whose token was revoked at the same moment: exactly one refresh, nobody gets
    InvalidRefreshToken, and both poll successfully."""
    sim = oauth_sim
    workers = [provider_service(engine, wall, billit_oauth_settings(sim), seed=n) for n in range(2)]
    for ref in (1001, 1002):
        sim.billit.create_order(ref)
        workers[0].track("billit", str(ref), interval_s=5)
    poll_round(workers[0])
    assert sim.billit.refreshes_ok == 1
    sim.billit.expire_tokens()
    wall.advance(6)
    claims = []
    workers[0].dispatch_due(claims.extend, lease_s=30, limit=10, chunk_size=10)
    barrier = threading.Barrier(2)

    def run(n: int) -> None:
        barrier.wait()
        workers[n].poll_claims([claims[n]])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sim.billit.refreshes_ok == 2 and sim.billit.refreshes_rejected == 0
    assert all(i.last_error is None and i.consecutive_failures == 0 for i in workers[0].items())


def test_billit_spent_refresh_token_names_the_setting(engine, oauth_sim, wall):
    """A refresh token the provider refuses: a clear error naming the variable to set."""
    settings = billit_oauth_settings(oauth_sim)
    settings["billit"] = settings["billit"].model_copy(update={"refresh_token": SecretStr("spent-long-ago")})
    service = provider_service(engine, wall, settings)
    oauth_sim.billit.create_order(1001)
    error = first_poll_error(service, "billit", "1001")
    assert "POLLER_BILLIT__REFRESH_TOKEN" in error and "InvalidRefreshToken" in error
    assert "spent-long-ago" not in error


# -- Amili Norway collection (OAuth2 client credentials) ---------------------------------------

def collection_settings(sim) -> dict:
    from worker.providers.amili_collection import AmiliCollectionSettings

    return {"amili_collection": AmiliCollectionSettings(
        base_url=sim.url, auth_url=sim.url, client_id="sim-collection-client",
        client_secret=SecretStr("sim-collection-secret"), org_id="497f6eca-6276-4993-bfeb-53cbbbba6f08")}


@pytest.fixture
def coll_sim(sim, wall):
    sim.amili_collection.token_service.time_fn = lambda: wall().timestamp()
    return sim


def test_collection_invoice_case_and_batch_lives(engine, coll_sim, wall):
    """Invoice (new and legacy spellings alike), its case by case number, and a batch, to terminal;
    one client-credentials token for all of it."""
    sim, coll = coll_sim, coll_sim.amili_collection
    service = provider_service(engine, wall, collection_settings(sim))
    new = coll.create_invoice(scenario="paid")
    legacy = coll.create_invoice(scenario="paid", legacy=True)
    case_number = coll.invoice_body(new)["collectionCaseNumber"]
    batch = coll.create_batch(scenario="partial")
    ids = {name: service.track("amili_collection", ref, interval_s=5, kind=kind).id for name, ref, kind in (
        ("new", new, "invoice"), ("legacy", legacy, "invoice"), ("case", case_number, "case"),
        ("batch", batch, "batch"))}
    live(service, sim, wall, 7)
    invoice_life = [s for _, s in statuses(service, ids["new"])]
    assert invoice_life[0] == "open" and invoice_life[-1] == "closed"
    assert statuses(service, ids["legacy"]) == statuses(service, ids["new"])  # spellings do not matter
    assert [s for _, s in statuses(service, ids["case"])][-1] == "closed"
    assert [s for _, s in statuses(service, ids["batch"])] == ["queued", "processing", "partial"]
    last = [e for e in service.events_after(0) if e.item_id == ids["new"]][-1]
    assert last.data["snapshot"]["paid_amount"] == last.data["snapshot"]["original_amount"] + 140
    assert {i.state for i in service.items()} == {"terminal"}
    assert coll.tokens_issued == 1


def test_collection_token_refresh_before_expiry_and_once_on_401(engine, coll_sim, wall):
    """The token is renewed shortly before expires_on, and a rejected token costs exactly one
    refresh and retry, never a failure."""
    sim, coll = coll_sim, coll_sim.amili_collection
    service = provider_service(engine, wall, collection_settings(sim))
    service.track("amili_collection", coll.create_invoice(), interval_s=5)
    poll_round(service)
    wall.advance(sim.config.token_ttl_seconds - 30)  # inside the refresh margin
    poll_round(service)
    assert coll.tokens_issued == 2
    coll.expire_tokens()
    wall.advance(6)
    poll_round(service)
    assert coll.tokens_issued == 3
    (item,) = service.items()
    assert item.consecutive_failures == 0 and item.last_error is None


def test_collection_token_service_down_is_retryable(engine, coll_sim, wall):
    """When the token service fails, the poll fails retryably and says which call failed."""
    sim = coll_sim
    service = provider_service(engine, wall, collection_settings(sim))
    service.track("amili_collection", sim.amili_collection.create_invoice(), interval_s=5)
    sim.faults.add("amili_collection", "503", ref="token")
    poll_round(service)
    (item,) = service.items()
    assert "POST /token answered 503" in item.last_error
    assert (item.next_poll_at - wall()).total_seconds() <= 1  # retryable: the short backoff


# -- Amili ARM (batches; HTTP status carries the state) ---------------------------------------

@pytest.mark.parametrize("auth", ["client_credentials", "static_token"])
@pytest.mark.parametrize(("scenario", "life"), [
    ("ok", ["processing", "processed"]), ("partial", ["processing", "partially_processed"])])
def test_arm_batch_life(engine, sim, wall, auth, scenario, life):
    """202 while processing, then 200 or 206; both ways of getting the bearer JWT."""
    from worker.providers.amili_arm import AmiliArmSettings

    creds = ({"auth_url": sim.url, "client_id": "sim-arm-client", "client_secret": SecretStr("sim-arm-secret")}
             if auth == "client_credentials" else {"token": SecretStr("sim-arm-static-token")})
    settings = {"amili_arm": AmiliArmSettings(base_url=sim.url, client_no="10001", **creds)}
    service = provider_service(engine, wall, settings)
    item = service.track("amili_arm", sim.amili_arm.create_batch(scenario=scenario, documents=3), interval_s=5).id
    live(service, sim, wall, 4)
    got = [s for _, s in statuses(service, item)]
    assert got[0] == life[0] and got[-1] == life[1]
    last = [e for e in service.events_after(0) if e.item_id == item][-1]
    assert last.data["terminal"] and last.data["snapshot"]["http_status"] == (200 if scenario == "ok" else 206)
    if scenario == "partial":
        assert last.data["snapshot"]["failed_documents"]


# -- schema drift over HTTP: tolerated unknowns, clear errors, never a crash -------------------

def _arm_settings(sim):
    from worker.providers.amili_arm import AmiliArmSettings

    return {"amili_arm": AmiliArmSettings(base_url=sim.url, client_no="10001", token=SecretStr("sim-arm-static-token"))}


DRIFTS = {
    # provider: (settings, make item -> (ref, kind), unknown-enum drift, expected status, missing-field drift, error)
    "billit": (lambda s: {"billit": BillitSettings(base_url=s.url, api_key="sim-billit-key", party_id="1234")},
               lambda s: (str(s.billit.create_order()), None),
               {"OrderStatus": "Frobnicated"}, "unknown", ["OrderID"], "order body has no OrderID"),
    "amili_distribution": (dist_settings, lambda s: (s.amili_distribution.create_invoice(), None),
                           {"Status": 7}, "unknown", ["Status"], "no numeric Status"),
    "amili_collection": (collection_settings, lambda s: (s.amili_collection.create_invoice(), "invoice"),
                         {"data.status": "ESCALATED"}, "escalated", ["data.id"], "data has no id"),
    # By invoice number: a lookup by id would answer 304 (unchanged) before any drift shows.
    "amili_ada": (ada_settings, lambda s: (s.amili_ada.create_case(invoice_number="INV-D") and "INV-D", "invoice"),
                  {"_items.0.status": "frozen_by_court"}, "frozen_by_court", ["_items.0._id"], "case has no _id"),
    "amili_arm": (_arm_settings, lambda s: (s.amili_arm.create_batch(), "batch"),
                  {"status": "SOMETHING_NEW"}, "processing", ["results"], None),
}


@pytest.mark.parametrize("provider", sorted(DRIFTS))
def test_schema_drift_over_http(engine, sim, wall, provider):
    """An unknown enum value is kept and polling goes on; a missing identity field is a clear,
    recorded error naming the field; neither crashes the worker."""
    make_settings, make_item, unknown, expected, missing, error = DRIFTS[provider]
    if provider == "amili_ada":
        sim.amili_ada.wall_time = lambda: wall().timestamp()
    service = provider_service(engine, wall, make_settings(sim))
    ref, kind = make_item(sim)
    service.track(provider, ref, interval_s=5, kind=kind)
    sim.faults.add(provider, "drift", set=unknown, count=1)
    poll_round(service)
    (item,) = service.items()
    assert item.last_error is None and statuses(service, item.id) == [("status.observed", expected)]
    wall.advance(6)
    sim.faults.add(provider, "drift", drop=missing, count=1)
    poll_round(service)
    (item,) = service.items()
    if error is None:  # a field the normalizer does not need: tolerated
        assert item.last_error is None
    else:
        assert error in item.last_error and item.consecutive_failures == 1
