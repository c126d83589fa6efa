"""The ASGI entry point: exact-path routing, API-envelope errors, the lifespan."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from edge_ai.router import Router


async def echo(http: HttpRequest) -> Response:
    return JSONResponse({"path": http.url.path, "body": (await http.body()).decode()})


async def broken(http: HttpRequest) -> Response:
    raise RuntimeError("a bug")


def error_page(http: HttpRequest, status: int, detail: str) -> Response:
    return JSONResponse({"error": {"message": f"{http.method} {http.url.path}: {detail}"}}, status_code=status)


def call(app: Router, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], Any]:
    scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [], "http_version": "1.1", "scheme": "http", "server": ("t", 80), "root_path": ""}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


APP = Router([Route("/v1/chat/completions", echo, methods=["POST"]), Route("/boom", broken, methods=["POST"]),
              Route("/healthz", echo)], error_page)


def test_paths_route_exactly_with_or_without_a_trailing_slash():
    assert call(APP, "POST", "/v1/chat/completions", b"hi") == (200, {"content-length": "43", "content-type": "application/json"},
                                                                {"path": "/v1/chat/completions", "body": "hi"})
    assert call(APP, "POST", "/v1/chat/completions/")[0] == 200
    assert call(APP, "GET", "/healthz")[0] == 200 and call(APP, "HEAD", "/healthz")[0] == 200


def test_unknown_paths_wrong_methods_and_bugs_answer_in_the_envelope():
    status, _, body = call(APP, "POST", "/v1/nothing")
    assert status == 404 and body["error"]["message"] == "POST /v1/nothing: Not Found"
    status, headers, body = call(APP, "GET", "/v1/chat/completions")
    assert status == 405 and headers["allow"] == "POST" and "Method Not Allowed" in body["error"]["message"]
    status, _, body = call(APP, "POST", "/boom")
    assert status == 500 and "internal error" in body["error"]["message"]


def lifespan_run(app: Router) -> list[str]:
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    asyncio.run(app({"type": "lifespan"}, receive, send))
    return sent


def test_lifespan_runs_start_up_and_shutdown_and_reports_a_failed_start():
    steps: list[str] = []

    @asynccontextmanager
    async def ok(app: Router):
        steps.append("up")
        yield
        steps.append("down")

    assert lifespan_run(Router([], error_page, ok)) == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert steps == ["up", "down"]

    @asynccontextmanager
    async def failing(app: Router):
        raise RuntimeError("no model")
        yield

    assert lifespan_run(Router([], error_page, failing)) == ["lifespan.startup.failed"]
