"""Every request passes here first: who is asking (key -> principal), whether they may (admin routes,
per-key limits), and, once answered, what it did (metrics, the request log).

A plain ASGI middleware: it sees the response's own headers (`x-edge-source`, …) and the first body
byte of a stream without wrapping responses, and it holds a key's concurrency slot until the last byte
of a streamed answer has gone out."""

from __future__ import annotations

import itertools
import logging
import os
import time
from typing import Any, Awaitable, Callable

import orjson

from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.errors import EdgeError, Forbidden, RateLimited
from edge_ai.server.auth import KeyRing
from edge_ai.server.metrics import Metrics, Outcome

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

request_log = logging.getLogger("edge_ai.requests")

PUBLIC = ("/healthz", "/readyz", "/docs", "/docs-assets/", "/openapi.json", "/dashboard")  # no data behind them
_IDS = itertools.count(1)
_PREFIX = os.urandom(3).hex()


def api_of(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    if path.startswith("/admin/"):
        return "admin"
    if path == "/metrics" or path.startswith("/dashboard/"):
        return "metrics"
    return "other"


def error_response(api: str, exc: EdgeError) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    status, body, headers = (an if api == "anthropic" else oa).render_error(exc)
    raw = [(b"content-type", b"application/json")] + [(k.encode(), v.encode()) for k, v in headers.items()]
    if status == 401:
        raw.append((b"www-authenticate", b"Bearer"))
    return status, orjson.dumps(body), raw


class Gatekeeper:
    def __init__(self, app: ASGIApp, keys: KeyRing, metrics: Metrics, json_log: bool, log_prompts: bool) -> None:
        self.app, self.keys, self.metrics = app, keys, metrics
        self.json_log, self.log_prompts = json_log, log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(PUBLIC) and not path.startswith("/dashboard/"):
            await self.app(scope, receive, send)
            return
        api = api_of(path)
        started = time.perf_counter()
        try:
            principal = self.keys.identify(scope["headers"])
            if api == "admin":
                principal.require_admin()
            elif api == "metrics":
                principal.require_metrics()
            limits = principal.limits
            if limits is not None:
                limits.admit()
        except EdgeError as exc:
            reason = "rate_limited" if isinstance(exc, RateLimited) else ("forbidden" if isinstance(exc, Forbidden) else "unauthorized")
            self.metrics.refuse(api, reason)
            status, body, headers = error_response(api, exc)
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            self._log(scope, api, None, status, time.perf_counter() - started, {}, reason)
            return

        state = scope.setdefault("state", {})
        state["principal"] = principal
        request_id = state["request_id"] = f"{_PREFIX}-{next(_IDS)}"
        seen: dict[str, Any] = {"status": 500, "headers": {}, "first_byte": None}

        async def observe(message: dict[str, Any]) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                seen["status"] = message["status"]
                headers = message.setdefault("headers", [])
                seen["headers"] = {k: v for k, v in headers if k.startswith(b"x-edge-") or k == b"content-type"}
                headers.append((b"x-request-id", request_id.encode()))
                # the time in edge-ai before the answer's first byte (W3C Server-Timing): against a client's own
                # clock it tells the server's part of a slow request from the network's and the client's
                headers.append((b"server-timing", f"app;dur={(time.perf_counter() - started) * 1000:.1f}".encode()))
            elif kind == "http.response.body" and seen["first_byte"] is None and message.get("body"):
                seen["first_byte"] = time.perf_counter() - started
            await send(message)

        try:
            await self.app(scope, receive, observe)
        finally:
            if limits is not None:
                limits.release()
            seconds = time.perf_counter() - started
            h = seen["headers"]
            source = h.get(b"x-edge-source", b"").decode()
            similarity = h.get(b"x-edge-similarity")
            outcome = Outcome(
                api=api, tenant=principal.tenant, status=seen["status"],
                source=source if "," not in source else source.split(",", 1)[0],
                model=state.get("model", ""), seconds=seconds, first_byte_s=seen["first_byte"],
                stream=h.get(b"content-type", b"").startswith(b"text/event-stream"),
                prompt_tokens=state.get("prompt_tokens", 0), completion_tokens=state.get("completion_tokens", 0),
                similarity=float(similarity) if similarity else None, truncated=b"x-edge-truncated" in h,
                drafted=state.get("drafted", 0), accepted=state.get("accepted", 0),
            )
            self.metrics.observe(outcome)
            self._log(scope, api, outcome, seen["status"], seconds, state, h.get(b"x-edge-fallback", b"").decode())

    def _log(self, scope: Scope, api: str, o: Outcome | None, status: int, seconds: float, state: dict[str, Any], reason: str) -> None:
        if not self.json_log:
            return  # uvicorn's access log has the line; the JSON log is the structured one
        principal = state.get("principal")
        record: dict[str, Any] = {
            "request_id": state.get("request_id"), "method": scope["method"], "path": scope["path"], "api": api,
            "tenant": principal.tenant if principal else None, "key_id": principal.key_id if principal else None,
            "status": status, "latency_ms": round(seconds * 1000, 3),
        }
        if o is not None:
            record.update(source=o.source or None, model=o.model or None, stream=o.stream,
                          prompt_tokens=o.prompt_tokens, completion_tokens=o.completion_tokens,
                          ttft_ms=round(o.first_byte_s * 1000, 3) if o.stream and o.first_byte_s is not None else None)
            if o.drafted:
                record.update(drafted_tokens=o.drafted, accepted_tokens=o.accepted)
            if state.get("call_belief") is not None:
                record["call_belief"] = round(state["call_belief"], 3)
        if reason:
            record["fallback_reason" if o is not None else "refused"] = reason
        if self.log_prompts and o is not None:
            record.update(prompt=state.get("prompt"), answer=state.get("answer"))
        request_log.info("request", extra={"fields": record})
