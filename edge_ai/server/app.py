"""The FastAPI application: the dialects' routes, admin, metrics and dashboard, behind the gatekeeper
(keys, limits, observation). The engines load in the background so /healthz answers at once."""

from __future__ import annotations

import asyncio
import sys
import ipaddress
import logging
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from edge_ai import __version__
from edge_ai.config import Settings
from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.runtime import Runtime
from edge_ai.server import admin, dashboard, openapi, routes
from edge_ai.server.auth import KeyRing
from edge_ai.server.gatekeeper import Gatekeeper
from edge_ai.server.http import JSONResponse
from edge_ai.server.metrics import Metrics

log = logging.getLogger("edge_ai")

DESCRIPTION = """A local OpenAI- and Anthropic-compatible server that keeps clients answered when the cloud AI API
is down: it fronts the cloud (gateway mode) and answers from a semantic cache or a local GGUF model.

Authenticate with `Authorization: Bearer <key>` or `x-api-key: <key>` when keys are configured."""


SWITCH_INTERVAL_S = 0.0005


def create_app(settings: Settings) -> FastAPI:
    # The engine and embedder threads run Python between their passes; at the default 5 ms a request
    # waits up to that long for the GIL each time one of them has it (RELIABILITY.md: the surge drill).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    runtime = Runtime(settings)
    keys = KeyRing(settings)
    metrics = Metrics(runtime, keys.tenants())
    if keys.open and not _loopback(settings.host):
        log.warning("no api_keys configured and listening on %s: anyone who can reach it can use it", settings.host)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = asyncio.get_running_loop().run_in_executor(None, runtime.load)
        probe = asyncio.create_task(metrics.watch_loop())
        yield
        probe.cancel()
        await loader
        if runtime.gateway is not None:
            await runtime.gateway.close()
        if runtime.pool is not None:
            await runtime.pool.close()
        runtime.close()

    app = FastAPI(title="edge-ai", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)  # /docs is served from shipped assets (openapi.install)
    app.state.runtime = runtime
    app.state.keys = keys
    app.state.metrics = metrics

    async def healthz(http: HttpRequest) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(http: HttpRequest) -> Response:
        return JSONResponse(runtime.status(), status_code=200 if runtime.ready else 503)

    async def prometheus(http: HttpRequest) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.include_router(routes.router(runtime))  # first: the hot routes are matched before the others
    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["Operations"], summary="Process is up")
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["Operations"], summary="Models loaded (503 until then)")
    app.add_api_route("/metrics", prometheus, methods=["GET"], tags=["Operations"], summary="Prometheus metrics")
    app.include_router(admin.router(runtime, keys))
    app.include_router(dashboard.router(runtime, metrics))
    openapi.install(app)

    def envelope(http: HttpRequest, status: int, detail: str) -> Response:
        """Unknown paths, wrong methods and bugs still answer in the API's error envelope."""
        message = f"{http.method} {http.url.path}: {detail}"
        anthropic = http.url.path.startswith("/v1/messages")
        body = an.error_body(status, message) if anthropic else oa.error_body(status, message)
        return JSONResponse(body, status_code=status)

    async def http_error(http: HttpRequest, exc: HTTPException) -> Response:
        response = envelope(http, exc.status_code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def invalid(http: HttpRequest, exc: RequestValidationError) -> Response:
        return envelope(http, 400, str(exc.errors()[:1]))

    async def bug(http: HttpRequest, exc: Exception) -> Response:
        log.error("unexpected error", exc_info=exc)
        return envelope(http, 500, "internal error in edge-ai; see its log")

    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, invalid)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, bug)
    app.add_middleware(Gatekeeper, keys=keys, metrics=metrics, json_log=settings.log_format == "json",
                       log_prompts=settings.log_prompts)
    return app


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
