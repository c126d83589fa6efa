"""One cloud API: forwarding with separate connect / first-byte / total timeouts, and a circuit breaker.

Every way an outage shows itself becomes an `UpstreamFailure` with a short reason; the caller decides
what to do with it (next upstream, then the local path).

The client is aiohttp: a forwarded request costs about a third of the CPU it costs with httpx, and
in gateway mode that cost is the proxy overhead every cloud answer pays (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any, AsyncIterator

import aiohttp
from multidict import CIMultiDictProxy

from edge_ai.config import UpstreamConfig

log = logging.getLogger("edge_ai.upstream")

RETRYABLE = {429, 500, 502, 503, 504, 529}
PATHS = {"anthropic": "/v1/messages", "openai": "/v1/chat/completions"}
# Wire dialects an upstream of another dialect serves: an OpenAI upstream answers Responses requests too.
SERVED_BY = {"responses": ("openai", "/v1/responses")}
PASS_HEADERS = ("anthropic-version", "anthropic-beta", "openai-organization", "openai-project")


class UpstreamFailure(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class Breaker:
    """closed -> (N consecutive failures) -> open -> (cooldown) -> half-open: one probe -> closed | open.

    Every change of state is recorded where it happens, with its wall-clock time: an operator (or the
    outage drill) reads when the breaker opened and closed, not what a poll of the state happened to see.
    """

    def __init__(self, failures: int, cooldown: float) -> None:
        self.threshold, self.cooldown = failures, cooldown
        self.state = "closed"
        self.failures = 0
        self.opened_at = 0.0
        self.last_error: str | None = None
        self._probing = False
        self.outcomes: Counter[str] = Counter()  # "ok" and failure kinds (failure_kind), for metrics
        self.transitions: deque[tuple[float, str]] = deque(maxlen=32)  # (time.time(), new state)

    def _enter(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self.transitions.append((time.time(), state))

    def allow(self) -> bool:
        if self.state == "closed":
            return True
        if self.state == "open" and time.monotonic() - self.opened_at >= self.cooldown:
            self._enter("half_open")
        if self.state == "half_open" and not self._probing:
            self._probing = True  # exactly one request probes; the rest go local without waiting
            return True
        return False

    def success(self) -> None:
        if self.state != "closed":
            log.info("upstream recovered: breaker closed")
        self._enter("closed")
        self.failures, self._probing = 0, False
        self.outcomes["ok"] += 1

    def failure(self, reason: str) -> None:
        self.failures += 1
        self.last_error = reason
        self.outcomes[failure_kind(reason)] += 1
        self._probing = False
        if self.state == "half_open" or self.failures >= self.threshold:
            if self.state != "open":
                log.warning("upstream breaker open after %d failures: %s", self.failures, reason)
            self._enter("open")
            self.opened_at = time.monotonic()

    def status(self) -> dict[str, Any]:
        return {"state": self.state, "consecutive_failures": self.failures, "last_error": self.last_error,
                "transitions": [{"at": round(at, 3), "state": state} for at, state in self.transitions]}

    def reset(self) -> None:
        """An operator's reset: the next request goes to the cloud again."""
        self._enter("closed")
        self.failures, self._probing, self.opened_at = 0, False, 0.0


def failure_kind(reason: str) -> str:
    """A failure reason in a few words fit for a metric label (the reason itself goes to the log)."""
    r = reason.lower()
    if "breaker open" in r:
        return "breaker_open"
    if r.startswith("http 429"):
        return "http_429"
    if r.startswith("http 5"):
        return "http_5xx"
    if r.startswith("http "):
        return "http_other"
    if "timeout" in r:
        return "timeout"
    if "stream" in r:
        return "stream_broken"
    if "malformed" in r:
        return "malformed"
    if any(w in r for w in ("connect", "reset", "refused", "closed", "eof")):
        return "connection"
    return "other"


@dataclass
class CloudResponse:
    """What the gateway needs of an upstream answer, whatever client fetched it."""

    status_code: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def is_success(self) -> bool:
        return 200 <= self.status_code < 300

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class StreamEvent:
    """One server-sent event: `event` is empty for OpenAI streams; `raw` is what is relayed verbatim."""

    event: str
    data: str

    @property
    def raw(self) -> str:
        return (f"event: {self.event}\n" if self.event else "") + f"data: {self.data}\n\n"


class Upstream:
    def __init__(self, cfg: UpstreamConfig, breaker: Breaker) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.dialect = cfg.dialect
        self.breaker = breaker
        self.base = cfg.base_url.rstrip("/")
        self.url = self.base + PATHS[cfg.dialect]
        # sock_read bounds the wait for the headers and every later read of a stream: the first-byte timeout
        self._timeout = aiohttp.ClientTimeout(total=None, connect=cfg.connect_timeout, sock_read=cfg.first_byte_timeout)
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """Made on first use: a session belongs to the event loop that runs it."""
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=256, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout, auto_decompress=True)
        return self._session

    def _headers(self, client_headers: dict[str, str]) -> dict[str, str]:
        h = {k: v for k, v in client_headers.items() if k in PASS_HEADERS}
        key = self.cfg.api_key
        if self.dialect == "anthropic":
            h.setdefault("anthropic-version", "2023-06-01")
            if key:
                h["x-api-key"] = key
            elif "x-api-key" in client_headers:
                h["x-api-key"] = client_headers["x-api-key"]
            elif "authorization" in client_headers:
                h["authorization"] = client_headers["authorization"]
        else:
            h["authorization"] = f"Bearer {key}" if key else client_headers.get("authorization", "")
        h["content-type"] = "application/json"
        return h

    def _content(self, body: dict[str, Any], raw: bytes | None) -> bytes:
        """The client's bytes as they came, unless the model name is mapped for this upstream."""
        model = body.get("model")
        if isinstance(model, str) and model in self.cfg.model_map:
            return json.dumps({**body, "model": self.cfg.model_map[model]}).encode()
        return raw if raw is not None else json.dumps(body).encode()

    def url_for(self, wire: str) -> str:
        """Where a request of wire dialect `wire` goes on this upstream."""
        return self.base + SERVED_BY[wire][1] if wire in SERVED_BY else self.url

    async def send(self, body: dict[str, Any], client_headers: dict[str, str], raw: bytes | None = None,
                   url: str | None = None) -> tuple[CloudResponse, Any]:
        """Non-streaming call: (a 2xx or non-retryable 4xx response, its parsed JSON); raises UpstreamFailure."""
        url = url or self.url
        headers = self._headers(client_headers)
        content = self._content(body, raw)
        for attempt in range(2):  # the second attempt only after a short 429 retry-after
            try:
                async with asyncio.timeout(self.cfg.total_timeout):
                    async with self.session.post(url, data=content, headers=headers) as r:
                        resp = CloudResponse(r.status, r.headers, await r.read())
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise UpstreamFailure(_describe(exc)) from None
            if await self._should_retry(resp, attempt):
                continue
            self._check_status(resp)
            try:
                return resp, resp.json()
            except ValueError:
                raise UpstreamFailure("malformed body from upstream") from None
        raise AssertionError("unreachable")

    async def open_stream(
        self, body: dict[str, Any], client_headers: dict[str, str], raw: bytes | None = None, url: str | None = None
    ) -> tuple[CloudResponse, AsyncIterator[StreamEvent]]:
        """Streaming call: returns once the status and the first event are in (first-byte timeout)."""
        url = url or self.url
        deadline = time.monotonic() + self.cfg.total_timeout
        headers = self._headers(client_headers)
        content = self._content(body, raw)
        for attempt in range(2):
            try:
                r = await self.session.post(url, data=content, headers=headers)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise UpstreamFailure(_describe(exc)) from None
            if r.status >= 400:
                try:
                    resp = CloudResponse(r.status, r.headers, await r.read())
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    raise UpstreamFailure(_describe(exc)) from None
                finally:
                    r.release()
                if await self._should_retry(resp, attempt):
                    continue
                self._check_status(resp)
                return resp, _no_events()
            events = _sse_events(r, deadline)
            try:
                first = await events.__anext__()
            except StopAsyncIteration:
                raise UpstreamFailure("stream closed before its first event") from None
            except BaseException:
                await events.aclose()
                raise
            return CloudResponse(r.status, r.headers, b""), _prepend(first, events)
        raise AssertionError("unreachable")

    async def _should_retry(self, resp: CloudResponse, attempt: int) -> bool:
        if resp.status_code != 429 or attempt > 0:
            return False
        wait = _retry_after(resp)
        if wait is None or wait > self.cfg.max_retry_after:
            return False
        await asyncio.sleep(wait)
        return True

    def _check_status(self, resp: CloudResponse) -> None:
        if resp.status_code in RETRYABLE:
            kind = ""
            try:
                kind = resp.json().get("error", {}).get("type", "")
            except (ValueError, AttributeError):
                pass
            raise UpstreamFailure(f"http {resp.status_code}{' ' + kind if kind else ''}", _retry_after(resp))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _sse_events(resp: aiohttp.ClientResponse, deadline: float) -> AsyncIterator[StreamEvent]:
    """Parse an SSE body; every way it can break becomes UpstreamFailure."""
    event, data = "", []
    try:
        async for raw_line in resp.content:
            if time.monotonic() > deadline:
                raise UpstreamFailure("total timeout")
            line = raw_line.decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif not line and data:
                payload = "\n".join(data)
                if payload != "[DONE]":
                    try:
                        json.loads(payload)
                    except ValueError:
                        raise UpstreamFailure("malformed stream event") from None
                yield StreamEvent(event, payload)
                event, data = "", []
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise UpstreamFailure(f"stream broken: {_describe(exc)}") from None
    finally:
        resp.release()


async def _prepend(first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    yield first
    async for ev in rest:
        yield ev


async def _no_events() -> AsyncIterator[StreamEvent]:
    return
    yield  # pragma: no cover


def _retry_after(resp: CloudResponse) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _describe(exc: BaseException) -> str:
    # aiohttp's timeouts are TimeoutErrors too: the specific ones first
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "connect timeout"
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return "first-byte timeout"
    if isinstance(exc, TimeoutError):
        return "total timeout"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connection refused"
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError, ConnectionError)):
        return "connection reset"
    return type(exc).__name__
