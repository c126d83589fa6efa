"""The ASGI entry point: exact-path routing, the lifespan, and errors in the API's own envelope.

edge-ai serves a handful of fixed paths, so a dict lookup on the path does the routing. Starlette's
application around the same routes (its error and exception middleware, pattern matching and
per-route wrappers) cost ~30 µs of every request on this machine's bare stack, about a tenth of an
exact cache hit over HTTP (BENCHMARKS.md). Handlers still take Starlette requests and return Starlette
responses.
"""

from __future__ import annotations

import logging
from typing import Any, AsyncContextManager, Awaitable, Callable

from starlette.datastructures import State
from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("edge_ai.router")

Handler = Callable[[HttpRequest], Awaitable[Response]]
ErrorPage = Callable[[HttpRequest, int, str], Response]  # (request, status, detail) -> the error answer
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Router:
    def __init__(self, routes: list[Route], error: ErrorPage,
                 lifespan: Callable[["Router"], AsyncContextManager[None]] | None = None) -> None:
        self.table: dict[str, dict[str, Handler]] = {}
        for route in routes:
            methods = route.methods or {"GET", "HEAD"}
            self.table.setdefault(route.path, {}).update(dict.fromkeys(methods, route.endpoint))
        self.error = error
        self.lifespan = lifespan
        self.state = State()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            response = await self._answer(HttpRequest(scope, receive))
            await response(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _answer(self, request: HttpRequest) -> Response:
        path = request.scope["path"]
        methods = self.table.get(path) or self.table.get(path.rstrip("/"))  # "/v1/messages/" is "/v1/messages"
        if methods is None:
            return self.error(request, 404, "Not Found")
        handler = methods.get(request.scope["method"])
        if handler is None:
            response = self.error(request, 405, "Method Not Allowed")
            response.headers["allow"] = ", ".join(sorted(methods))
            return response
        try:
            return await handler(request)
        except Exception:  # a bug outside a route's own guard: still an answer, in the API's envelope
            log.exception("unexpected error")
            return self.error(request, 500, "internal error in edge-ai; see its log")

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        context = self.lifespan(self) if self.lifespan else None
        try:
            if context is not None:
                await context.__aenter__()
        except BaseException as exc:
            log.exception("start-up failed")
            await send({"type": "lifespan.startup.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.startup.complete"})
        await receive()  # lifespan.shutdown
        try:
            if context is not None:
                await context.__aexit__(None, None, None)
        except BaseException as exc:
            log.exception("shutdown failed")
            await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
            return
        await send({"type": "lifespan.shutdown.complete"})
