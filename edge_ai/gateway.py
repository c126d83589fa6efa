"""Gateway mode: the cloud first, and the same request answered locally when the cloud fails.

- Each request goes to the upstreams of its own dialect, in priority order, skipping any whose breaker
  is open (no waiting on a cloud known to be down).
- A good cloud answer is passed through as is and written into the semantic cache (write-through).
- A failure before the first byte reaches the client means the caller answers locally
  (cache, then local model) with `x-edge-fallback` saying why.
- A stream that breaks after text was sent is finished by the local model from that text: one
  well-formed answer, nothing repeated or lost, one final event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass
from types import ModuleType
from typing import Any, AsyncIterator, Callable

from starlette.responses import Response, StreamingResponse

from edge_ai.cache import SemanticCache
from edge_ai.config import Settings
from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.dialects import responses as rs
from edge_ai.engines.upstream import SERVED_BY, Breaker, StreamEvent, Upstream, UpstreamFailure, failure_kind
from edge_ai.errors import EdgeError
from edge_ai.policy import AnswerPolicy
from edge_ai.request import Final, Request

log = logging.getLogger("edge_ai.gateway")

DIALECTS: dict[str, ModuleType] = {"anthropic": an, "openai": oa, "responses": rs}
CLIENT_HEADERS = ("authorization", "x-api-key", "anthropic-version", "anthropic-beta", "openai-organization", "openai-project")


@dataclass
class Fallback:
    """The cloud could not answer; `reason` goes to the client in `x-edge-fallback`."""

    reason: str


class Gateway:
    def __init__(self, settings: Settings, policy: AnswerPolicy, cache: SemanticCache) -> None:
        self.policy, self.cache = policy, cache
        self.upstreams = [Upstream(cfg, Breaker(settings.breaker_failures, settings.breaker_cooldown)) for cfg in settings.upstreams]
        self.counts = {"cloud": 0, "fallback": 0, "midstream_recovered": 0}
        self.failovers: Counter[str] = Counter()  # by the first upstream's failure kind
        self.last_failover: tuple[float, str] | None = None  # (unix time, reason)
        self._background: set[asyncio.Task[None]] = set()

    def serves(self, dialect: str) -> bool:
        return any(u.dialect == _upstream_dialect(dialect) for u in self.upstreams)

    async def forward(
        self, dialect: str, raw: bytes, body: dict[str, Any], build: Callable[[], Request], headers: dict[str, str]
    ) -> Response | Fallback:
        """`build` makes the internal request (raising EdgeError when the local path cannot take it);
        it is called only when a write-through or a recovery needs it."""
        client_headers = {k: headers[k] for k in CLIENT_HEADERS if k in headers}
        req = _Lazy(build)
        reasons = []
        for up in (u for u in self.upstreams if u.dialect == _upstream_dialect(dialect)):
            if not up.breaker.allow():
                reasons.append(f"{up.name}: breaker open")
                continue
            try:
                if body.get("stream"):
                    return await self._stream(up, dialect, raw, body, req, client_headers)
                return await self._send(up, dialect, raw, body, req, client_headers)
            except UpstreamFailure as f:
                up.breaker.failure(f.reason)
                reasons.append(f"{up.name}: {f.reason}")
                log.warning("upstream %s failed: %s", up.name, f.reason)
        self.counts["fallback"] += 1
        reason = "; ".join(reasons) or "no upstream"
        self._failed_over(reasons[0].split(": ", 1)[-1] if reasons else "no upstream", reason)
        return Fallback(reason)

    def _failed_over(self, first: str, reason: str) -> None:
        self.failovers[failure_kind(first)] += 1
        self.last_failover = (time.time(), reason)

    async def _send(self, up: Upstream, wire: str, raw: bytes, body: dict[str, Any], req: "_Lazy", headers: dict[str, str]) -> Response:
        resp, answer = await up.send(body, headers, raw, up.url_for(wire))
        if resp.is_success:
            try:
                final = DIALECTS[wire].parse_response(answer)
            except ValueError:
                raise UpstreamFailure("malformed body from upstream") from None
            if final is not None:
                self._write_through(req, final)
        up.breaker.success()  # a 4xx is the client's problem, not an outage: the cloud is up
        self.counts["cloud"] += 1
        return Response(resp.content, status_code=resp.status_code, media_type="application/json", headers=_cloud_headers(up, resp.headers))

    async def _stream(self, up: Upstream, wire: str, raw: bytes, body: dict[str, Any], req: "_Lazy", headers: dict[str, str]) -> Response:
        resp, events = await up.open_stream(body, headers, raw, up.url_for(wire))
        if resp.status_code >= 400:
            up.breaker.success()
            return Response(resp.content, status_code=resp.status_code, media_type="application/json", headers=_cloud_headers(up, resp.headers))
        self.counts["cloud"] += 1
        return StreamingResponse(self._relay(up, wire, events, req, str(body.get("model", ""))), media_type="text/event-stream",
                                 headers=_cloud_headers(up, resp.headers))

    async def _relay(self, up: Upstream, wire: str, events: AsyncIterator[StreamEvent], req: "_Lazy", model: str) -> AsyncIterator[str]:
        dialect = DIALECTS[wire]
        state = dialect.RelayState()
        try:
            try:
                async for ev in events:
                    state.observe(ev.event, ev.data)
                    yield ev.raw
            except ValueError as exc:  # a malformed or error event
                raise UpstreamFailure(str(exc)) from None
            if not state.done:
                raise UpstreamFailure("stream ended before its final event")
        except UpstreamFailure as f:
            up.breaker.failure(f.reason)
            log.warning("upstream %s stream broke after %d chars: %s", up.name, len(state.text), f.reason)
            try:
                local_req = req.get()
            except EdgeError:
                yield dialect.stream_error(EdgeError(f"the cloud stream broke: {f.reason}"))
                return
            self.counts["midstream_recovered"] += 1
            self._failed_over("stream broken", f"{up.name}: {f.reason} (after {len(state.text)} chars)")
            try:
                reply = self.policy.continue_locally(local_req, state.text)
                async for chunk in state.finish_with(model, reply.events):
                    yield chunk
            except EdgeError as exc:
                yield dialect.stream_error(exc)
            return
        up.breaker.success()
        final = state.final()
        if final is not None:
            self._write_through(req, final)

    def _write_through(self, req: "_Lazy", final: Final) -> None:
        """Store the cloud's answer off the response path: the client waits neither for building the
        internal request nor for the embedding."""
        task = asyncio.create_task(self._store(req, final))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _store(self, req: "_Lazy", final: Final) -> None:
        try:
            local_req = req.get()
        except EdgeError:
            return  # a request only the cloud understands (images, n > 1…): nothing to cache
        if not local_req.cache.write:
            return
        try:
            await self.cache.put(local_req, final, "cloud")
        except Exception:
            log.exception("write-through to the cache failed; the cloud answer is still served")

    def status(self) -> list[dict[str, Any]]:
        return [{"name": u.name, "dialect": u.dialect, "base_url": u.cfg.base_url, **u.breaker.status()} for u in self.upstreams]

    async def close(self) -> None:
        if self._background:  # let pending write-throughs land before the cache closes
            await asyncio.wait(self._background, timeout=10)
        for u in self.upstreams:
            await u.close()


def _upstream_dialect(wire: str) -> str:
    """The dialect of the upstreams that serve requests of wire dialect `wire`."""
    return SERVED_BY[wire][0] if wire in SERVED_BY else wire


class _Lazy:
    """The internal request, built at most once and only when asked for."""

    def __init__(self, build: Callable[[], Request]) -> None:
        self._build = build
        self._req: Request | None = None

    def get(self) -> Request:
        if self._req is None:
            self._req = self._build()
        return self._req


def _cloud_headers(up: Upstream, upstream_headers: Any) -> dict[str, str]:
    keep = {k: v for k, v in upstream_headers.items() if k.lower() in ("request-id", "x-request-id", "retry-after")}
    return {**keep, "x-edge-source": "cloud", "x-edge-upstream": up.name}
