"""OpenAI's error body for every refusal, and the handlers that make one of any failure.

Why: the `openai` client turns a status and `{"error": {"message", "type", "param",
"code"}}` into its typed exceptions (BadRequestError, AuthenticationError, ...), and an
agent framework retries or reports by them. So no request may end in a bare 500 with a
traceback: a body that is not JSON, a field of the wrong type or out of range, a model or
route that does not exist, a full queue, a failure inside the server, each answers in this
shape, with the field named in `param` where one is to blame.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

log = logging.getLogger("v4c.serve")

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.param, self.code, self.headers)


def error_response(
    status: int, message: str, param=None, code=None, headers: dict | None = None
) -> JSONResponse:
    body = {
        "error": {
            "message": message,
            "type": _TYPES.get(status, "invalid_request_error"),
            "param": param,
            "code": code,
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api(_: Request, err: APIError):
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, err: RequestValidationError):
        return _validation(err.errors())

    @app.exception_handler(HTTPException)
    async def _http(_: Request, err: HTTPException):
        message = err.detail if isinstance(err.detail, str) else str(err.detail)
        if err.status_code == 404:
            message = "no such route; this server answers /v1/chat/completions, "
            message += "/v1/completions, /v1/models, /health and /metrics"
        return error_response(err.status_code, message, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def _internal(_: Request, err: Exception):
        log.exception("request failed")
        return error_response(500, f"internal error: {type(err).__name__}: {err}")


def _validation(problems) -> JSONResponse:
    """The first problem pydantic found, as OpenAI words a bad parameter."""
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    where = [str(p) for p in first.get("loc", ()) if p != "body"]
    if first.get("type") == "json_invalid":
        return error_response(400, f"the body is not valid JSON: {first.get('msg')}", None)
    param = _param(where)
    message = f"{param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problems)"
    return error_response(400, message, param, "invalid_value")


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none"}


def _param(where: list[str]) -> str | None:
    """pydantic's location as a parameter path: messages[0].role (union branches dropped)."""
    out = ""
    for part in where:
        if part.isdigit():
            out += f"[{part}]"
        elif part[:1].islower() and not set("[-") & set(part) and part not in _TYPE_TAGS:
            out += f".{part}" if out else part
    return out or None
