"""Loopback Billit endpoints for bench/poll.py, counting the requests they answer.

``Nginx`` answers ``GET /v1/orders/{id}`` from memory (with ``changed``, every answer carries a
new message, so every poll is a change); ``DelayedEndpoint`` answers after a fixed delay on an
event loop and records when each order was asked for.
"""

from __future__ import annotations

import asyncio
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

_ORDER = ('{"OrderID": $1, "OrderStatus": "ToPay", "CurrentDocumentDeliveryDetails": null, '
          '"Messages": [MESSAGES]}')
_MESSAGE = '{"Description": "note $msec", "CreationDate": "2026-01-01", "MessageDirection": "Outgoing"}'


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Nginx:
    """nginx on a loopback port, one worker, keep-alive without limit, no access log."""

    def __init__(self, prefix: Path, *, changed: bool = False) -> None:
        self.prefix, self.port = prefix, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.body = _ORDER.replace("MESSAGES", _MESSAGE if changed else "")
        self.proc: subprocess.Popen[bytes] | None = None
        self._reads = 0

    def start(self) -> None:
        """Write the configuration and start nginx in the foreground."""
        self.prefix.mkdir(parents=True, exist_ok=True)
        body = self.body.replace("'", "\\'")
        (self.prefix / "nginx.conf").write_text(f"""
worker_processes 1;
pid {self.prefix}/nginx.pid;
error_log {self.prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {self.prefix}/body; proxy_temp_path {self.prefix}/proxy;
  fastcgi_temp_path {self.prefix}/fcgi; uwsgi_temp_path {self.prefix}/uwsgi; scgi_temp_path {self.prefix}/scgi;
  keepalive_requests 10000000; keepalive_timeout 600s;
  server {{
    listen 127.0.0.1:{self.port};
    location = /nginx_status {{ stub_status; }}
    location ~ ^/v1/orders/([0-9]+)$ {{ default_type application/json; return 200 '{body}'; }}
  }}
}}
""")
        self.proc = subprocess.Popen(["nginx", "-p", str(self.prefix), "-c", str(self.prefix / "nginx.conf"),
                                      "-g", "daemon off;"])
        deadline = time.monotonic() + 10
        while True:
            try:
                self.requests()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def requests(self) -> int:
        """Requests answered so far, not counting these status reads."""
        with urllib.request.urlopen(f"{self.url}/nginx_status", timeout=5) as resp:
            text = resp.read().decode()
        self._reads += 1
        handled = int(text.splitlines()[2].split()[2])
        return handled - self._reads

    def stop(self) -> None:
        """Stop nginx."""
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)


class DelayedEndpoint:
    """An asyncio HTTP/1.1 server (keep-alive) that answers each order after ``delay`` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay, self.port = delay, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.seen: dict[str, list[float]] = defaultdict(list)
        self.count = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> None:
        """Serve on a background thread."""
        self.thread.start()
        asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, backlog=1024), self.loop).result(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pattern = re.compile(rb"^GET /v1/orders/([0-9]+) ")
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                match = pattern.match(head)
                await asyncio.sleep(self.delay)
                if match is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                    continue
                ref = match.group(1).decode()
                self.seen[ref].append(time.monotonic())
                self.count += 1
                body = (f'{{"OrderID": {ref}, "OrderStatus": "ToPay", "Messages": []}}').encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def requests(self) -> int:
        """Orders answered so far."""
        return self.count

    def gaps(self, bound: float, *, since: float) -> dict[str, float]:
        """Gaps between two polls of one order, within the measurement that started at ``since``;
        ``covered`` is the share of them at most ``bound`` seconds."""
        gaps = [b - a for times in list(self.seen.values()) for a, b in zip(times, times[1:], strict=False)
                if a >= since]
        if not gaps:
            return {"gap_median": 0.0, "gap_p99": 0.0, "gap_max": 0.0, "covered": 0.0}
        gaps.sort()
        on_time = sum(g <= bound for g in gaps) / len(gaps)
        return {"gap_median": statistics.median(gaps), "gap_p99": gaps[int(len(gaps) * 0.99) - 1],
                "gap_max": gaps[-1], "covered": on_time}

    def stop(self) -> None:
        """Stop serving."""
        self.loop.call_soon_threadsafe(self.loop.stop)
