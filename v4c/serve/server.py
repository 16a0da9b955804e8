"""Running the app under uvicorn: the socket bound first (so the address printed is the one
listening, port 0 included), and a stop that ends generation before connections.

Why the override: uvicorn's graceful shutdown waits for open connections, and a streamed
reply is one until its last token; so a stop signal (Ctrl-C, SIGTERM) first tells the
scheduler to stop, which ends every request in flight with finish reason "abort", then lets
uvicorn close. The process then exits 0: the stop was asked for.
"""

from __future__ import annotations

import signal
import socket

import uvicorn
from fastapi import FastAPI

from v4c.errors import V4CError
from v4c.runtime.scheduler import Scheduler


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, scheduler: Scheduler):
        super().__init__(config)
        self.scheduler = scheduler

    def handle_exit(self, sig: int, frame) -> None:
        self.scheduler.stop(wait=False)
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True  # a second Ctrl-C: do not wait for connections
        self.should_exit = True


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    # listening now, before uvicorn starts: a client that connects as soon as the address is
    # printed waits in the backlog instead of being refused while the app starts up
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def make_server(app: FastAPI, scheduler: Scheduler) -> uvicorn.Server:
    config = uvicorn.Config(
        app, log_level="warning", timeout_graceful_shutdown=5, lifespan="on", access_log=False
    )
    return _Server(config, scheduler)


def run_server(
    session,
    max_seq: int,
    *,
    host: str,
    port: int,
    max_waiting: int,
    prefill_chunk: int,
    api_key: str | None,
    name: str | None,
    log,
    drafter=None,
) -> None:
    """Serve `session`'s engine until a stop signal (`v4c serve`)."""
    from v4c.serve.app import create_app
    from v4c.serve.state import ServeState

    engine = session.engine
    scheduler = Scheduler(
        engine, session.tokenizer, max_waiting=max_waiting, prefill_chunk=prefill_chunk,
        drafter=drafter,
    )  # fmt: skip
    model = name or session.spec.name
    app = create_app(ServeState(scheduler, session.tokenizer, model, api_key))
    try:
        sock = bind(host, port)
    except OSError as err:
        raise V4CError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    address = f"http://{host}:{sock.getsockname()[1]}"
    log(f"serving {model!r} on {address}/v1 ({engine.max_batch} cache rows, max_seq {max_seq}, "
        f"prefill chunks of {prefill_chunk}, up to {max_waiting} waiting"
        f"{', API key required' if api_key else ''}); Ctrl-C stops")  # fmt: skip
    make_server(app, scheduler).run(sockets=[sock])
    log("stopped")
