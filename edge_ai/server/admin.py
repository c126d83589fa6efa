"""/admin/...: the operator's endpoints (admin key only; the gatekeeper checks): cache stats, entries,
deletes and purges, upstream breakers, keys. The `edge-ai cache` CLI does the same on the directory."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.requests import Request as HttpRequest
from starlette.responses import Response

from edge_ai.dialects import openai as oa
from edge_ai.dialects.validate import parse
from edge_ai.engines.store import Entry
from edge_ai.errors import BadRequest, NotFound
from edge_ai.server.auth import KeyRing
from edge_ai.server.http import JSONResponse, read_json
from edge_ai.server.routes import _guarded

if TYPE_CHECKING:
    from edge_ai.runtime import Runtime


class Purge(BaseModel):
    """Which entries to delete: all that match every given field (at least one)."""

    tenant: str | None = Field(None, description="the key's tenant (narrowed sub-tenants included)")
    model: str | None = Field(None, description="the model name clients sent")
    scope_key: str | None = Field(None, description="one scope, as listed by /admin/cache/entries")
    source: str | None = Field(None, description="local, cloud or import")


def tenant_of(e: Entry) -> str:
    return str(e.scope.get("tenant", "")).split("/", 1)[0]


def _matcher(p: Purge) -> Callable[[Entry], bool]:
    def match(e: Entry) -> bool:
        return ((p.tenant is None or tenant_of(e) == p.tenant) and (p.model is None or e.scope.get("model") == p.model)
                and (p.scope_key is None or e.scope_key == p.scope_key) and (p.source is None or e.source == p.source))
    return match


def _listed(e: Entry) -> dict[str, Any]:
    return {"id": e.id, "tenant": str(e.scope.get("tenant", "")), "model": e.scope.get("model"), "scope_key": e.scope_key,
            "source": e.source, "query": e.query, "answer": e.answer, "finish_reason": e.finish_reason,
            "completion_tokens": e.completion_tokens, "created": e.created, "backend": e.backend}


def _path_param(name: str) -> dict[str, Any]:
    return {"parameters": [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}]}


def _query(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}


def router(runtime: "Runtime", keys: KeyRing) -> APIRouter:
    def cache():
        runtime.require()
        assert runtime.cache is not None
        return runtime.cache

    async def stats(http: HttpRequest) -> Response:
        async def work() -> Response:
            c = cache()

            def scan() -> dict[str, Any]:
                by_tenant, by_model, by_source = Counter(), Counter(), Counter()
                for e in c.store:
                    by_tenant[tenant_of(e)] += 1
                    by_model[str(e.scope.get("model"))] += 1
                    by_source[e.source] += 1
                return {"entries": sum(by_source.values()), "by_tenant": dict(by_tenant), "by_model": dict(by_model),
                        "by_source": dict(by_source), "lookups": dict(c.hits), "threshold": c.threshold}

            return JSONResponse(await asyncio.to_thread(scan))

        return await _guarded(oa, work)

    async def entries(http: HttpRequest) -> Response:
        async def work() -> Response:
            c = cache()
            q = http.query_params
            tenant, text, model = q.get("tenant"), (q.get("q") or "").lower(), q.get("model")
            try:
                limit = max(1, min(int(q.get("limit", "100")), 1000))
            except ValueError:
                raise BadRequest("limit must be a number", param="limit") from None
            match = _matcher(Purge(tenant=tenant, model=model))

            def scan() -> list[dict[str, Any]]:
                out = []
                for e in c.store:
                    if match(e) and (not text or text in e.query.lower() or text in e.answer.lower()):
                        out.append(_listed(e))
                        if len(out) >= limit:
                            break
                return out

            found = await asyncio.to_thread(scan)
            return JSONResponse({"object": "list", "data": found, "count": len(found)})

        return await _guarded(oa, work)

    async def delete_entry(http: HttpRequest) -> Response:
        async def work() -> Response:
            id_ = http.path_params["entry_id"]
            if not await asyncio.to_thread(cache().delete, id_):
                raise NotFound(f"no cache entry {id_}")
            return JSONResponse({"id": id_, "deleted": True})

        return await _guarded(oa, work)

    async def purge(http: HttpRequest) -> Response:
        async def work() -> Response:
            p = parse(Purge, await read_json(http, 64 * 1024))
            if p.tenant is None and p.model is None and p.scope_key is None and p.source is None:
                raise BadRequest("say what to purge: tenant, model, scope_key or source")
            c, match = cache(), _matcher(p)

            def run() -> int:
                doomed = [e.id for e in c.store if match(e)]
                return sum(c.delete(i) for i in doomed)

            return JSONResponse({"deleted": await asyncio.to_thread(run)})

        return await _guarded(oa, work)

    async def upstreams(http: HttpRequest) -> Response:
        async def work() -> Response:
            gw = runtime.gateway
            body: dict[str, Any] = {"upstreams": gw.status() if gw else [], "failovers": dict(gw.failovers) if gw else {}}
            if gw is not None and gw.last_failover is not None:
                body["last_failover"] = {"time": gw.last_failover[0], "reason": gw.last_failover[1]}
            return JSONResponse(body)

        return await _guarded(oa, work)

    async def reset_upstream(http: HttpRequest) -> Response:
        async def work() -> Response:
            name = http.path_params["name"]
            gw = runtime.gateway
            found = [u for u in (gw.upstreams if gw else []) if u.name == name]
            if not found:
                raise NotFound(f"no upstream named {name}")
            found[0].breaker.reset()
            return JSONResponse({"name": name, **found[0].breaker.status()})

        return await _guarded(oa, work)

    async def list_keys(http: HttpRequest) -> Response:
        return JSONResponse({"open": keys.open, "keys": keys.listing()})

    api = APIRouter(prefix="/admin", tags=["Admin"])
    api.add_api_route("/cache/stats", stats, methods=["GET"], summary="Cache entries by tenant, model and source")
    api.add_api_route("/cache/entries", entries, methods=["GET"], summary="List or search entries",
                      openapi_extra={"parameters": [_query("tenant"), _query("model"), _query("q"),
                                                    {**_query("limit"), "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}]})
    api.add_api_route("/cache/entries/{entry_id}", delete_entry, methods=["DELETE"], summary="Delete one entry",
                      openapi_extra=_path_param("entry_id"))
    api.add_api_route("/cache/purge", purge, methods=["POST"], summary="Delete entries by tenant, model, scope or source",
                      openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": Purge.model_json_schema()}}}})
    api.add_api_route("/upstreams", upstreams, methods=["GET"], summary="Upstream breakers and failovers")
    api.add_api_route("/upstreams/{name}/reset", reset_upstream, methods=["POST"], summary="Close an upstream's breaker",
                      openapi_extra=_path_param("name"))
    api.add_api_route("/keys", list_keys, methods=["GET"], summary="Configured keys: tenant, rights, hash prefix, last use")
    return api
