"""A full cycle of every provider and a webhook, with known secret values: none of them appears
in any log line (tokens, API keys, client secrets, refresh tokens, webhook secrets, private keys)."""

from __future__ import annotations

import pytest

from tests.daemons import start_daemon, tail_log, wait_for
from tests.receiver import Receiver
from worker.subscriptions import Subscriptions

pytestmark = pytest.mark.e2e

SECRETS = {
    "billit_client_secret": "billit-client-secret-XK81",
    "billit_refresh_token": "billit-refresh-token-QM27",
    "amili_collection_client_secret": "collection-secret-ZP44",
    "amili_arm_client_secret": "arm-secret-WV93",
    "amili_arm_static_token": "arm-static-token-LT05",
    "amili_ada_api_code": "ada-api-code-HR62",
    "amili_distribution_token": "distribution-token-BN18",
}


@pytest.fixture
def sim(wall_free_sim_config):  # noqa: F811 - replaces the shared simulator with one holding these secrets
    from simulator.server import Simulator

    with Simulator(wall_free_sim_config).start() as s:
        yield s


@pytest.fixture
def wall_free_sim_config():
    from simulator.server import SimulatorConfig

    return SimulatorConfig(port=0, speed=0, seed_orders=0, options={"billit_oauth": True, **SECRETS})


def test_no_secret_in_any_log_line(daemon_env, service, sim, tmp_path):  # noqa: F811
    """Five providers and a webhook through their lives at DEBUG level, with a token revocation
    and auth failures on the way: no configured or issued secret is ever logged."""
    receiver = Receiver().start()
    try:
        subs = Subscriptions(service.sessions, allow_http=True, allow_private=True, known_providers=(
            "billit", "amili_distribution", "amili_collection", "amili_ada", "amili_arm"))
        _, webhook_secret = subs.add(receiver.url)
        receiver.secrets = [webhook_secret]
        env = {**daemon_env, **sim.env(), "POLLER_LOG_LEVEL": "DEBUG", "POLLER_WEBHOOK_ALLOW_HTTP": "true",
               "POLLER_WEBHOOK_ALLOW_PRIVATE": "true", "POLLER_AMILI_ARM__TOKEN": SECRETS["amili_arm_static_token"],
               "POLLER_AMILI_DISTRIBUTION__TOKEN": SECRETS["amili_distribution_token"]}
        env.pop("POLLER_AMILI_ARM__CLIENT_ID", None)  # ARM on its static token; collection on client credentials
        refs = [
            ("billit", str(sim.billit.create_order()), None),
            ("amili_distribution", sim.amili_distribution.create_invoice(), None),
            ("amili_collection", sim.amili_collection.create_invoice(), "invoice"),
            ("amili_ada", sim.amili_ada.create_case(), "case"),
            ("amili_arm", sim.amili_arm.create_batch(), "batch"),
        ]
        for provider, ref, kind in refs:
            service.track(provider, ref, interval_s=0.3, kind=kind)
        daemon = start_daemon(env, tmp_path / "run.log")
        try:
            wait_for("all observed", lambda: len({e.item_id for e in service.events_after(0)}) >= 5 or None,
                     proc=daemon.proc, log=daemon.log)
            for provider in ("billit", "amili_collection", "amili_ada"):
                getattr(sim, provider).expire_tokens()  # 401s, then refreshes: error paths get logged
            sim.faults.add("billit", "401", count=2)
            for _ in range(3):
                seen = len(service.events_after(0))
                sim.clock.advance(10)
                wait_for("changes", lambda s=seen: len(service.events_after(0)) > s or None, proc=daemon.proc,
                         log=daemon.log)
            wait_for("delivered", lambda: len(receiver.ok()) >= len(service.events_after(0)) or None,
                     proc=daemon.proc, log=daemon.log)
        finally:
            assert daemon.interrupt() == 0, tail_log(daemon.log)
    finally:
        receiver.stop()
    log = daemon.log.read_text()
    assert len(log.splitlines()) > 100  # DEBUG: plenty of lines to search
    secrets = dict(SECRETS, webhook_secret=webhook_secret, webhook_key=webhook_secret.removeprefix("whsec_"),
                   billit_rotated_refresh_token=sim.billit.current_refresh_token)
    key_lines = [line for line in sim.amili_ada.private_key_pem.splitlines() if line and "PRIVATE KEY" not in line]
    secrets.update({f"ada_private_key_line_{n}": line for n, line in enumerate(key_lines)})
    leaked = {name for name, value in secrets.items() if value in log}
    assert leaked == set(), leaked
