"""/dashboard: the page an operator opens during an outage (served by edge-ai, nothing fetched from the
internet), and /dashboard/data, the JSON it polls (admin or metrics key)."""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from starlette.requests import Request as HttpRequest
from starlette.responses import HTMLResponse, Response

from edge_ai.server.http import JSONResponse

if TYPE_CHECKING:
    from edge_ai.runtime import Runtime
    from edge_ai.server.metrics import Metrics


class _Load:
    """A counter's rate between two looks (the embedder's busy seconds per wall second)."""

    def __init__(self) -> None:
        self.t, self.value, self.rate = time.monotonic(), 0.0, 0.0

    def update(self, value: float) -> float:
        now = time.monotonic()
        if now - self.t >= 1.0:
            self.rate = max(0.0, (value - self.value) / (now - self.t))
            self.t, self.value = now, value
        return self.rate


def snapshot(runtime: "Runtime", metrics: "Metrics", embedder_load: _Load) -> dict[str, Any]:
    out: dict[str, Any] = {"ready": runtime.ready, "error": runtime.error, "uptime_s": round(time.monotonic() - runtime.started, 1),
                           "answers": dict(metrics.answers), "series": metrics.timeline.series(10)}
    gw = runtime.gateway
    out["gateway"] = gw is not None
    out["upstreams"] = gw.status() if gw else []
    out["last_failover"] = {"time": gw.last_failover[0], "reason": gw.last_failover[1]} if gw and gw.last_failover else None
    out["failovers"] = dict(gw.failovers) if gw else {}
    if runtime.models is not None:
        out["slots"] = [{"model": m.name, **{k: m.engine.load()[k] for k in ("slots", "slots_busy", "queue_depth", "queue_limit", "rejected")}}
                        for m in runtime.models.all()]
    if runtime.embedder is not None:
        st = runtime.embedder.stats()
        out["embedder"] = {"busy": round(embedder_load.update(float(st["busy_s"])), 3), "queued": st["queued"], "texts": st["texts"]}
    if runtime.cache is not None:
        out["cache"] = {"entries": len(runtime.cache.index), "by_tenant": runtime.cache.entries_by_tenant(), "lookups": dict(runtime.cache.hits)}
    return out


def router(runtime: "Runtime", metrics: "Metrics") -> APIRouter:
    page = resources.files("edge_ai.server").joinpath("dashboard.html").read_text(encoding="utf-8")
    load = _Load()

    async def dashboard(http: HttpRequest) -> Response:
        return HTMLResponse(page)

    async def data(http: HttpRequest) -> Response:
        return JSONResponse(snapshot(runtime, metrics, load), headers={"cache-control": "no-store"})

    api = APIRouter(tags=["Operations"])
    api.add_api_route("/dashboard", dashboard, methods=["GET"], include_in_schema=False)
    api.add_api_route("/dashboard/data", data, methods=["GET"], summary="What the dashboard shows, as JSON")
    return api
