"""A webhook receiver for benchmarks: answers 204 at once, logs "<webhook-id> <unix time>" per request.

    python bench/receiver.py PORT LOGFILE
"""

from __future__ import annotations

import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, path = int(sys.argv[1]), sys.argv[2]
log = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        log.write(f"{self.headers.get('webhook-id')} {time.time():.6f}\n")
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
print("ready", flush=True)
server.serve_forever()
