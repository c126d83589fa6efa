"""A pool of inference servers for the local path: OpenAI-compatible servers on a site's GPU boxes
(llama-server, vLLM, Ollama, another edge-ai) answer before the in-process model, which stays the last
resort.

- Routing: the least loaded healthy backend (requests in flight over weight) is tried first, then the next.
- Health: each backend has a breaker (consecutive failures open it, a probe after the cooldown closes it)
  and a watcher that asks its `/v1/models` every `backend_health_interval` seconds.
- Failover: a backend that fails before its first text is skipped for the next; one whose stream breaks
  after text was sent raises `Broken` with that text, and the caller finishes the answer in-process.
- Only plain text answers go out: a grammar-constrained answer (JSON, a forced tool call), a completion
  or an assistant prefill is answered in-process, where the grammar and the template are edge-ai's own.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator

import aiohttp

from edge_ai.config import BackendConfig, UpstreamConfig
from edge_ai.engines.upstream import Breaker, StreamEvent, Upstream, UpstreamFailure
from edge_ai.request import Final, Request

log = logging.getLogger("edge_ai.pool")


class Broken(Exception):
    """A backend's stream broke after `text` was sent to the client."""

    def __init__(self, backend: str, text: str, completion_tokens: int) -> None:
        super().__init__(f"backend {backend}: stream broken after {len(text)} characters")
        self.text, self.completion_tokens = text, completion_tokens


class Lease:
    """One request's place in a backend's in-flight count, given back once: when the answer ends, or when
    a reply that is never read is cancelled (an unstarted generator runs no `finally`)."""

    def __init__(self, backend: "Backend") -> None:
        self.backend = backend
        backend.in_flight += 1

    def release(self) -> None:
        if self.backend is not None:
            self.backend.in_flight -= 1
            self.backend = None


class Backend:
    def __init__(self, cfg: BackendConfig, breaker: Breaker) -> None:
        self.cfg, self.name = cfg, cfg.name
        # the gateway's OpenAI client: same timeouts, same failure kinds, same breaker
        self.upstream = Upstream(UpstreamConfig(
            name=cfg.name, dialect="openai", base_url=cfg.base_url, api_key=cfg.api_key,
            connect_timeout=cfg.connect_timeout, first_byte_timeout=cfg.first_byte_timeout,
            total_timeout=cfg.total_timeout, max_retry_after=0.0), breaker)
        self.breaker = breaker
        self.in_flight = 0
        self.healthy = True  # what the last health check found
        self.answered = 0
        self.broken = 0  # streams that broke after text was sent (finished in-process)

    def load(self) -> float:
        return (self.in_flight + 1) / self.cfg.weight

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "healthy": self.healthy, "in_flight": self.in_flight, "answered": self.answered, "broken": self.broken,
                "weight": self.cfg.weight, **self.breaker.status()}


def takes(req: Request) -> bool:
    # tools and tool turns stay in-process: the backend's body is plain text turns
    return req.kind == "chat" and req.constraint is None and not req.prefill and not req.tools and \
        not any(m.tool_calls or m.role == "tool" for m in req.messages)


def body_of(req: Request, model: str, max_tokens: int, temperature: float) -> dict[str, Any]:
    """The request in OpenAI's chat format, with only standard fields (every server takes them)."""
    messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
        {"role": m.role, "content": m.content} for m in req.messages]
    body: dict[str, Any] = {"model": model or req.model, "messages": messages, "max_tokens": max_tokens,
                            "temperature": temperature if req.temperature is None else req.temperature,
                            "stream": True, "stream_options": {"include_usage": True}}
    for name in ("top_p", "seed", "frequency_penalty", "presence_penalty"):
        if getattr(req, name) is not None:
            body[name] = getattr(req, name)
    if req.stop:
        body["stop"] = list(req.stop)
    return body


class Pool:
    def __init__(self, backends: list[BackendConfig], failures: int, cooldown: float, health_interval: float) -> None:
        self.backends = [Backend(cfg, Breaker(failures, cooldown)) for cfg in backends]
        self.health_interval = health_interval
        self._watcher: asyncio.Task[None] | None = None

    async def open(self, req: Request, max_tokens: int, temperature: float
                   ) -> tuple[Backend, AsyncIterator[str | Final], Lease] | None:
        """The first backend, least loaded first, that starts answering: (it, its text events then one
        Final, its lease); None when none does (the caller answers in-process)."""
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())
        for b in sorted((b for b in self.backends if b.healthy), key=Backend.load):
            if not b.breaker.allow():
                continue
            lease = Lease(b)
            try:
                resp, events = await b.upstream.open_stream(body_of(req, b.cfg.model, max_tokens, temperature), {})
                if not resp.is_success:  # 4xx: this server cannot take this request; another may
                    raise UpstreamFailure(f"http {resp.status_code}")
                first = await events.__anext__()
            except (UpstreamFailure, StopAsyncIteration) as exc:
                lease.release()
                reason = exc.reason if isinstance(exc, UpstreamFailure) else "empty stream"
                b.breaker.failure(reason)
                log.warning("backend %s failed before answering: %s", b.name, reason)
                continue
            except BaseException:
                lease.release()
                raise
            return b, self._relay(b, first, events, lease), lease
        return None

    async def _relay(self, b: Backend, first: StreamEvent, events: AsyncIterator[StreamEvent], lease: Lease
                     ) -> AsyncIterator[str | Final]:
        parts: list[str] = []
        finish, usage, deltas = "stop", None, 0
        try:
            event: StreamEvent | None = first
            while event is not None:
                if event.data == "[DONE]":
                    break
                chunk = json.loads(event.data)
                if isinstance(chunk.get("error"), dict):
                    raise UpstreamFailure(f"stream error: {chunk['error'].get('message', '')[:200]}")
                for choice in chunk.get("choices") or ():
                    text = (choice.get("delta") or {}).get("content")
                    if text:
                        parts.append(text)
                        deltas += 1
                        yield text
                    if choice.get("finish_reason"):
                        finish = "length" if choice["finish_reason"] == "length" else "stop"
                usage = chunk.get("usage") or usage
                event = await anext(events, None)
        except UpstreamFailure as f:
            b.breaker.failure(f.reason)
            b.broken += 1
            raise Broken(b.name, "".join(parts), deltas) from None
        finally:
            lease.release()
            await events.aclose()
        b.breaker.success()
        b.answered += 1
        tokens = int(usage["completion_tokens"]) if usage and "completion_tokens" in usage else deltas
        yield Final("".join(parts), finish, 0, tokens)

    async def _watch(self) -> None:
        """Every backend's `/v1/models`, each interval: one that does not answer is left out until it does."""
        while True:
            for b in self.backends:
                try:
                    async with b.upstream.session.get(b.cfg.base_url.rstrip("/") + "/v1/models",
                                                      timeout=aiohttp.ClientTimeout(total=2.0)) as r:
                        ok = r.status < 500
                except (aiohttp.ClientError, TimeoutError, OSError):
                    ok = False
                if ok != b.healthy:
                    log.warning("backend %s is %s", b.name, "healthy again" if ok else "not answering its health check")
                b.healthy = ok
            await asyncio.sleep(self.health_interval)

    def status(self) -> list[dict[str, Any]]:
        return [b.status() for b in self.backends]

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        for b in self.backends:
            await b.upstream.close()
