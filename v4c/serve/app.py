"""The FastAPI app: routes, the API key, the body-size limit, errors in OpenAI's shape.

Why thin: everything that decides tokens lives in the runtime's scheduler; the app parses
and checks requests (`protocol`), maps chat knobs onto the V4 encoding (`chat`), and
writes responses (`completions`, `replies`). Its lifetime is the server's: `create_app`
starts the scheduler's loop when the app starts and stops it (every request still in
flight ends with finish reason "abort") when the app stops.
"""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send
from fastapi.responses import PlainTextResponse

from v4c.serve import completions
from v4c.serve.errors import error_response, install_handlers
from v4c.serve.protocol import ChatRequest, CompletionRequest
from v4c.serve.responses import ModelCard, ModelList
from v4c.serve.state import ServeState


def create_app(state: ServeState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI):
        state.scheduler.start()
        try:
            yield
        finally:
            state.scheduler.stop()

    app = FastAPI(title="v4c", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.serve = state
    install_handlers(app)

    app.add_middleware(_Guard, state=state)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> ModelList:
        return ModelList(data=[_card(state, state.model)])

    @app.get("/v1/models/{name}")
    async def model(name: str) -> ModelCard:
        state.check_model(name)
        return _card(state, name)

    @app.get("/metrics")
    async def metrics():
        text = state.metrics.render(state.scheduler)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(body: ChatRequest, request: Request):
        return await completions.chat_completions(body, request, state)

    @app.post("/v1/completions")
    async def complete(body: CompletionRequest, request: Request):
        return await completions.completions(body, request, state)

    return app


def _card(state: ServeState, name: str) -> ModelCard:
    return ModelCard(id=name, created=int(time.time()), max_model_len=state.max_seq)


class _Guard:
    """The API key on /v1/ routes and the body-size limit, checked before a body is read.
    A plain ASGI middleware: Starlette's `BaseHTTPMiddleware` would hide the client's
    disconnect from the routes, which cancel a request by it."""

    def __init__(self, app: ASGIApp, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (refusal := self._refusal(scope)) is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope):
        state = self.state
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"].startswith("/v1/") and state.api_key is not None:
            if headers.get("authorization", "") != f"Bearer {state.api_key}":
                state.metrics.request_refused(401)
                return error_response(401, "a wrong or missing API key (Authorization: "
                                      "Bearer KEY)", code="invalid_api_key")  # fmt: skip
        size = headers.get("content-length", "0")
        if not size.isdigit() or int(size) > state.max_body:
            state.metrics.request_refused(413)
            return error_response(413, f"the body is larger than {state.max_body} bytes",
                                  code="request_too_large")  # fmt: skip
        return None
