"""The status page in a real headless Chromium: it renders offline, shows the figures, the failing
items with their errors, the subscriptions and the latest events, and refreshes itself."""

from __future__ import annotations

import random
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from cli.dashboard import make_server, page_data
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


def test_dashboard_in_a_real_browser(engine, sim, clock, chromium, tmp_path):
    """Chromium loads the page from loopback only (no CDN) and sees what an operator needs."""
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
    server = make_server("127.0.0.1", 0, lambda: page_data(sessions, 5.0, clock), refresh_s=7)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        dom = run_chromium(chromium, tmp_path, "--dump-dom", url).stdout
        shot = tmp_path / "dashboard.png"
        run_chromium(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1200,1100", url)
    finally:
        server.shutdown()
        server.server_close()
    assert "<h1>status-poller</h1>" in dom and 'http-equiv="refresh" content="7"' in dom
    assert "GET /v1/orders/1002 answered 503" in dom and "(alerted)" in dom  # the failing item and why
    assert "https://hooks.example.com/status" in dom and "secret-in-query" not in dom
    assert "poll.failing" in dom and "status.observed" in dom  # latest events
    assert "http://" not in dom.replace(url.rstrip("/"), "").replace("http-equiv", "")  # nothing fetched elsewhere
    assert shot.exists() and shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
