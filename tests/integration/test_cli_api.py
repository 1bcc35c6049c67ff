"""`poller api` as a deployment runs it: a process serving the app on its port, stopped by SIGTERM."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys

import requests

from tests.integration.test_cli import ROOT, cli_env, poller


def test_poller_api_serves_the_database_and_stops_cleanly_on_sigterm(db_url, tmp_path):
    """It prints its URL, answers /healthz without a key, /v1 with a key made by `poller keys`,
    and exits 0 on SIGTERM."""
    env = cli_env(db_url, tmp_path / "var")
    key = poller(env, "keys", "create", "svc").stdout.split()[-1]
    with subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--port", "0"], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            line = proc.stdout.readline()  # blocks until printed (or the process ended)
            found = re.fullmatch(r"poller: API on (http://127\.0\.0\.1:\d+/) \(docs \1docs\)\n", line)
            assert found, (line, proc.stderr.read() if proc.poll() is not None else "")
            url = found.group(1)
            health = requests.get(url + "healthz", timeout=10)
            assert health.status_code == 200 and health.json() == {"status": "ok"}
            assert requests.get(url + "v1/items", timeout=10).status_code == 401
            items = requests.get(url + "v1/items", headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert items.status_code == 200 and items.json()["data"] == []
            assert requests.get(url + "docs", timeout=10).status_code == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
        assert code == 0, proc.stderr.read()


def test_a_port_in_use_or_a_bad_host_is_one_line(tmp_path, db_url):
    env = cli_env(db_url, tmp_path / "var")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = poller(env, "api", "--port", str(port), ok=False)
        assert (proc.returncode, proc.stderr) == (2, f"error: port {port} is in use (set --port)\n")
        env["POLLER_API_PORT"] = str(port)
        proc = poller(env, "api", ok=False)
        assert (proc.returncode, proc.stderr) == (2, f"error: port {port} is in use (set POLLER_API_PORT or --port)\n")
    proc = poller(env, "api", "--host", "not a host", ok=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --host must be an IP address or a host name")


def test_the_api_socket_sends_small_writes_at_once():
    """A kept-alive request to `poller api` took 44 ms: uvicorn writes headers and body apart,
    and without TCP_NODELAY the body waited for the client's delayed ACK. The listening socket
    sets it; accepted connections inherit it."""
    from cli.serve import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        client = socket.create_connection(sock.getsockname()[:2])
        accepted, _ = sock.accept()
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        accepted.close()
        client.close()
    finally:
        sock.close()
