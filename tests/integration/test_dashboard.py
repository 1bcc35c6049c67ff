"""The status page (GET / of the API) in a real headless Chromium: it renders offline, shows the
figures, the failing items with their errors, the subscriptions and the latest events, and
refreshes itself."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from config.wiring import build_api
from tests.apiserver import ApiServer
from tests.conftest import missing
from worker.policy import PollPolicy
from worker.providers.base import HttpOptions, ProviderContext
from worker.providers.billit import BillitSettings
from worker.providers.registry import REGISTRY, ProviderSet
from worker.service import PollerService
from worker.store.db import make_sessionmaker
from worker.subscriptions import Subscriptions

#: The flags this workplace's machines need for headless Chromium (no network beyond loopback).
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars"]


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        missing("chromium (scripts/test installs Debian's package when run as root)")
    assert path is not None
    return path


def run_chromium(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


def poller_with_history(engine, sim, clock) -> None:
    """Two orders polled, one failing until alerted, and a webhook subscription with a secret in its URL."""
    sessions = make_sessionmaker(engine)
    service = PollerService(sessions, ProviderSet({"billit": BillitSettings(
        base_url=sim.url, api_key="sim-billit-key", party_id="1234")}, ProviderContext(
        http=HttpOptions(timeout_s=2), clock=clock)), PollPolicy(failing_after=2), clock=clock, rng=random.Random(4))
    subs = Subscriptions(sessions, allow_http=True, allow_private=True, known_providers=tuple(REGISTRY))
    subs.add("https://hooks.example.com/status?token=secret-in-query")
    for ref in (1001, 1002):
        sim.billit.create_order(ref)
        service.track("billit", str(ref), interval_s=5)
    service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)
    sim.faults.add("billit", "503", ref="1002")
    for _ in range(2):
        clock.advance(3600)
        service.dispatch_due(service.poll_claims, lease_s=30, limit=10, chunk_size=10)


def test_dashboard_in_a_real_browser(engine, api_settings, sim, clock, chromium, tmp_path):
    """Chromium loads the public page from loopback only (no CDN) and sees what an operator needs."""
    poller_with_history(engine, sim, clock)
    server = ApiServer(build_api(api_settings.model_copy(update={"dashboard_public": True}))).start()
    url = server.url + "/"
    try:
        dom = run_chromium(chromium, tmp_path, "--dump-dom", url).stdout
        shot = tmp_path / "dashboard.png"
        run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,1100", url)
    finally:
        server.stop()
    assert "<h1>status-poller</h1>" in dom and 'http-equiv="refresh" content="5"' in dom
    assert "GET /v1/orders/1002 answered 503" in dom and "(alerted)" in dom  # the failing item and why
    assert "https://hooks.example.com/status" in dom and "secret-in-query" not in dom
    assert "poll.failing" in dom and "status.observed" in dom  # latest events
    assert "http://" not in dom.replace(url.rstrip("/"), "").replace("http-equiv", "")  # nothing fetched elsewhere
    assert shot.exists() and shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_dashboard_with_the_key_in_the_url(engine, api_settings, sim, clock, chromium, tmp_path):
    """Behind a key, a browser given http://user:KEY@host/ sends it as Basic auth; without it, it
    gets the 401 and no figures."""
    from worker.apikeys import ApiKeys

    poller_with_history(engine, sim, clock)
    key = ApiKeys(make_sessionmaker(engine)).create("browser", read_only=True)[1]
    server = ApiServer(build_api(api_settings)).start()
    try:
        with_key = run_chromium(chromium, tmp_path, "--dump-dom",
                                f"http://operator:{key}@127.0.0.1:{server.port}/").stdout
        without = run_chromium(chromium, tmp_path, "--dump-dom", server.url + "/").stdout
    finally:
        server.stop()
    assert "<h1>status-poller</h1>" in with_key and "GET /v1/orders/1002 answered 503" in with_key
    assert "<h1>status-poller</h1>" not in without and "1002" not in without
