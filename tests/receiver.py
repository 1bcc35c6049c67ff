"""A webhook receiver over loopback that verifies every delivery with the reference library."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    status: int
    verified_with: list[int] = field(default_factory=list)  # indexes of the secrets that verified it

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


class Receiver:
    """Answers with a script of responses (then ``default_status``) and records every request.

    ``plan(status, times=1, delay=0, headers=None, match=None)`` queues answers; ``match`` limits one
    to requests whose webhook-id is that event id.
    """

    def __init__(self) -> None:
        self.received: list[Received] = []
        #: webhook-ids as requests arrive, before any planned delay (to catch one in flight).
        self.arrivals: list[str | None] = []
        self.secrets: list[str] = []
        self.default_status = 200
        self._plans: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                plan = receiver._take(headers.get("webhook-id"))
                with receiver._cond:
                    receiver.arrivals.append(headers.get("webhook-id"))
                    receiver._cond.notify_all()
                if plan.get("delay"):
                    time.sleep(plan["delay"])  # the slow subscriber being simulated
                status = plan.get("status", receiver.default_status)
                verified = []
                for n, secret in enumerate(list(receiver.secrets)):
                    try:
                        Webhook(secret).verify(body, headers)
                        verified.append(n)
                    except Exception:  # noqa: BLE001 - the library raises its own type
                        pass
                reply = b'{"ok": true}' if status < 300 else b'{"error": "nope"}'
                try:
                    self.send_response(status)
                    for k, v in (plan.get("headers") or {}).items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(reply)))
                    self.end_headers()
                    self.wfile.write(reply)
                    self.wfile.flush()
                except OSError:
                    return  # the sender went away (timed out, or was killed): nothing was delivered
                with receiver._cond:
                    receiver.received.append(Received(headers, body, status, verified))
                    receiver._cond.notify_all()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def plan(self, status: int, *, times: int = 1, delay: float = 0.0, headers: dict[str, str] | None = None,
             match: str | None = None) -> None:
        with self._lock:
            for _ in range(times):
                self._plans.append({"status": status, "delay": delay, "headers": headers, "match": match})

    def _take(self, webhook_id: str | None) -> dict[str, Any]:
        with self._lock:
            for plan in list(self._plans):
                if plan["match"] in (None, webhook_id):
                    self._plans.remove(plan)
                    return plan
        return {}

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until ``count`` requests arrived (a condition, not a sleep)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= count, timeout):
                raise AssertionError(f"receiver got {len(self.received)} of {count} requests")
            return list(self.received)

    def ok(self) -> list[Received]:
        return [r for r in self.received if r.status < 300]

    def start(self) -> Receiver:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
