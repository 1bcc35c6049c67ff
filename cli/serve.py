"""`poller api`: the HTTP API on uvicorn, on a socket of its own or on one `poller run` holds for it.

`poller run` binds the API's socket itself and hands it to its `poller api` child (``--fd``): a
port in use is refused before anything starts, POLLER_API_PORT=0 works (the daemon prints the
port it got), and while a killed API child is restarted, connections wait in the socket's
backlog instead of being refused.
"""

from __future__ import annotations

import errno
import socket

import typer

from config.logging import configure_logging
from config.settings import Settings
from config.validation import check_host
from worker.errors import InputError

#: Connections the kernel queues while no API process accepts them (e.g. during a restart).
BACKLOG = 2048
#: How long a stopping API waits for requests under way.
GRACEFUL_S = 10


def port_error(err: OSError, port: int, option: str = "--port") -> InputError:
    """A listening socket that could not be opened, as one line naming the setting to change."""
    if err.errno == errno.EADDRINUSE:
        return InputError(f"port {port} is in use (set {option})")
    if err.errno == errno.EACCES:
        return InputError(f"port {port} needs privileges to listen on (set {option} above 1023)")
    return InputError(f"cannot listen on port {port}: {err.strerror or err} (check the address and {option})")


def listen(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """A TCP socket listening on ``host:port`` (0 picks a free port), or an InputError naming ``option``."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise port_error(err, port, option) from None
    try:
        # A restarted API must be able to listen again at once, not after TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it. Without it, on a kept-alive connection uvicorn's body
        # write waits for the ACK of its header write, which the client delays: 44 ms a request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except OSError as err:
        sock.close()
        raise port_error(err, port, option) from None
    return sock


def url_of(sock: socket.socket) -> str:
    """The base URL a listening socket serves, e.g. ``http://127.0.0.1:8000/``."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def announce(url: str) -> str:
    """The line that tells where the API is."""
    return f"poller: API on {url} (docs {url}docs)"


def run_api(settings: Settings, *, host: str | None = None, port: int | None = None, fd: int | None = None) -> None:
    """Serve the API until SIGTERM or Ctrl-C, then stop cleanly (requests under way finish).

    The database must be at this poller's schema: the API never migrates (`poller migrate`,
    `poller run` and `poller worker` do). ``fd`` is a listening socket inherited from `poller run`.
    """
    import uvicorn

    from cli.context import interrupt_on_sigterm
    from cli.forked import freeze_heap
    from config.kicks import kick_for
    from config.wiring import build_api, current_engine

    if host is not None:
        try:
            check_host(host)
        except ValueError as err:
            raise InputError(f"--host {err}", field="--host") from None
    current_engine(settings)  # before listening: a database behind is an error, and nothing answers
    if fd is None:
        sock = listen(host or settings.api_addr, settings.api_port if port is None else port,
                      option="--port" if port is not None else "POLLER_API_PORT or --port")
        typer.echo(announce(url_of(sock)))
    else:
        sock = socket.socket(fileno=fd)
    # The CLI logs warnings only; a server logs at POLLER_LOG_LEVEL (uvicorn's lines included).
    configure_logging(settings.log_format, settings.log_level)
    app = build_api(settings, kick=kick_for(settings))
    freeze_heap()
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off", timeout_graceful_shutdown=GRACEFUL_S))
    # uvicorn shuts down on SIGTERM and SIGINT, then raises the signal again for the previous
    # handler: ours turns SIGTERM into KeyboardInterrupt, so both end here with exit status 0.
    interrupt_on_sigterm()
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
