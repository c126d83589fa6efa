"""Prometheus metrics: what each request did (observed once it is answered) and the engines' own
counters (read when scraped, so the hot path pays nothing for them).

Label values are bounded: tenants and models come from the configuration, anything else is `other`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from edge_ai.server.timeline import Timeline

if TYPE_CHECKING:
    from edge_ai.runtime import Runtime

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.98, 0.999, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DRAFT_BUCKETS = (0, 4, 16, 64, 256, 1024, 4096)
LOOP_PROBE_S = 0.02  # how often the event loop's lag is probed
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


@dataclass
class Outcome:
    """What one request did, as the middleware saw it leave."""

    api: str  # openai | anthropic | admin | other
    tenant: str
    status: int
    source: str  # cloud | cache | local | "" (no answer: an error, a listing)
    model: str
    seconds: float
    first_byte_s: float | None  # streams: time to the first event
    stream: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    similarity: float | None = None
    truncated: bool = False
    drafted: int = 0  # speculative decoding: draft tokens decoded for this answer, and those kept
    accepted: int = 0


class Metrics:
    def __init__(self, runtime: "Runtime", tenants: list[str]) -> None:
        self.runtime = runtime
        self.tenants = set(tenants)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("edge_ai_requests", "Requests answered, by API, answer source, status class, model and tenant.",
                                ["api", "source", "status", "model", "tenant"], registry=r)
        self.duration = Histogram("edge_ai_request_duration_seconds", "Time from request to the last byte of the answer.",
                                  ["api", "source"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("edge_ai_time_to_first_token_seconds", "Streams: time from request to the first event.",
                              ["api", "source"], buckets=LATENCY_BUCKETS, registry=r)
        self.prompt_tokens = Counter("edge_ai_prompt_tokens", "Prompt tokens of answered requests.", ["source", "model"], registry=r)
        self.generated_tokens = Counter("edge_ai_generated_tokens", "Answer tokens served.", ["source", "model"], registry=r)
        self.similarity = Histogram("edge_ai_cache_hit_similarity", "Similarity of served cache hits (1 = exact).",
                                    buckets=SIMILARITY_BUCKETS, registry=r)
        self.drafts = Histogram("edge_ai_llm_draft_tokens_per_answer", "Local answers decoded with speculation: draft "
                                "tokens per answer, decoded and kept.", ["model", "kind"], buckets=DRAFT_BUCKETS, registry=r)
        self.truncated = Counter("edge_ai_truncated_prompts", "Prompts cut to fit the local model's context.", registry=r)
        self.refused = Counter("edge_ai_refused_requests", "Requests refused before any work: auth and per-key limits.",
                               ["api", "reason"], registry=r)
        self.loop_lag = Histogram("edge_ai_event_loop_lag_seconds", "How late the event loop ran a timer due every "
                                  f"{LOOP_PROBE_S * 1000:.0f} ms: what a request waits before its handler runs.",
                                  buckets=LATENCY_BUCKETS, registry=r)
        r.register(_EngineCollector(runtime, self._tenant))
        self.timeline = Timeline()
        self._series: dict[tuple, tuple] = {}
        self.answers: dict[str, int] = {"cloud": 0, "cache": 0, "local": 0}  # since start, for the dashboard

    def _tenant(self, tenant: str) -> str:
        """A bounded label: the key's tenant when configured, `none` in the open default, else `other`."""
        base = tenant.split("/", 1)[0]
        if base in self.tenants:
            return base
        return "none" if not base else "other"

    def _children(self, o: Outcome) -> tuple:
        """The labelled series of one kind of request, looked up once: `labels()` takes a lock and
        checks every value on each call."""
        key = (o.api, o.source, o.status // 100, o.model, o.tenant)
        kids = self._series.get(key)
        if kids is None:
            source, model = o.source or "none", o.model or "none"
            kids = self._series[key] = (
                self.requests.labels(o.api, source, f"{o.status // 100}xx", model, self._tenant(o.tenant)),
                self.duration.labels(o.api, source), self.ttft.labels(o.api, source),
                self.prompt_tokens.labels(source, model), self.generated_tokens.labels(source, model),
            )
            if len(self._series) > 4096:  # passthrough tenants are unbounded in number; their labels are not
                self._series.clear()
        return kids

    def observe(self, o: Outcome) -> None:
        requests, duration, ttft, prompt_tokens, generated_tokens = self._children(o)
        requests.inc()
        duration.observe(o.seconds)
        if o.stream and o.first_byte_s is not None:
            ttft.observe(o.first_byte_s)
        if o.prompt_tokens:
            prompt_tokens.inc(o.prompt_tokens)
        if o.completion_tokens:
            generated_tokens.inc(o.completion_tokens)
        if o.similarity is not None:
            self.similarity.observe(o.similarity)
        if o.truncated:
            self.truncated.inc()
        if o.drafted:
            self.drafts.labels(o.model or "none", "drafted").observe(o.drafted)
            self.drafts.labels(o.model or "none", "accepted").observe(o.accepted)
        if o.source in self.answers and o.status < 400:
            self.answers[o.source] += 1
        self.timeline.add(o.source if o.status < 400 else "", o.status, o.seconds, o.first_byte_s if o.stream else None)

    async def watch_loop(self) -> None:
        """Probe the event loop until cancelled. The request duration is timed from the handler's start, so
        a busy loop delays every request by time no handler sees: this is that time."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LOOP_PROBE_S
            await asyncio.sleep(LOOP_PROBE_S)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def refuse(self, api: str, reason: str) -> None:
        self.refused.labels(api, reason).inc()
        self.timeline.add("", 429 if reason == "rate_limited" else 401, 0.0, None)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _EngineCollector(Collector):
    """The engines' counters and gauges, read at scrape time."""

    def __init__(self, runtime: "Runtime", tenant_label) -> None:
        self.runtime = runtime
        self.tenant_label = tenant_label

    def describe(self) -> list:
        return []  # scraped values only: nothing to check at registration

    def collect(self) -> Iterator:
        rt = self.runtime
        yield GaugeMetricFamily("edge_ai_ready", "1 once the models and cache are loaded.", value=1.0 if rt.ready else 0.0)
        if rt.cache is not None:
            lookups = CounterMetricFamily("edge_ai_cache_lookups", "Cache lookups by result.", labels=["result"])
            for result, n in rt.cache.hits.items():
                lookups.add_metric([result], n)
            yield lookups
            entries = GaugeMetricFamily("edge_ai_cache_entries", "Indexed cache entries by tenant.", labels=["tenant"])
            by_label: dict[str, int] = {}
            for tenant, n in rt.cache.entries_by_tenant().items():
                label = self.tenant_label(tenant)
                by_label[label] = by_label.get(label, 0) + n
            for label, n in sorted(by_label.items()):
                entries.add_metric([label], n)
            yield entries
            yield CounterMetricFamily("edge_ai_cache_write_failures", "Answers not stored: the store refused or was unreachable.",
                                      value=rt.cache.write_failures)
            store = rt.cache.store.stats()
            if store["backend"] == "redis":
                yield GaugeMetricFamily("edge_ai_cache_store_up", "1 while the shared cache's Redis answers.",
                                        value=1.0 if store["available"] else 0.0)
                yield CounterMetricFamily("edge_ai_cache_resyncs", "Index rebuilds from Redis (start, reconnect, flush, gap).",
                                          value=store["resyncs"])
                yield GaugeMetricFamily("edge_ai_cache_follow_lag_seconds", "Age of the last change applied from Redis when applied.",
                                        value=store["lag_s"])
        if rt.embedder is not None:
            e = rt.embedder
            yield CounterMetricFamily("edge_ai_embedder_texts", "Texts embedded.", value=e.texts)
            yield CounterMetricFamily("edge_ai_embedder_busy_seconds", "Time the embedder spent in forward passes.", value=e.busy_s)
            yield CounterMetricFamily("edge_ai_embedder_rejections", "Embeddings refused: queue full.", value=e.rejected)
            yield GaugeMetricFamily("edge_ai_embedder_queue_depth", "Texts waiting for the embedder.", value=e.stats()["queued"])
            yield _histogram("edge_ai_embedder_batch_size", "Texts per embedder forward pass.", dict(e.pass_sizes), BATCH_BUCKETS)
        if rt.models is not None:
            slots = GaugeMetricFamily("edge_ai_slots", "Local model slots.", labels=["model"])
            busy = GaugeMetricFamily("edge_ai_slots_busy", "Local model slots decoding.", labels=["model"])
            queue = GaugeMetricFamily("edge_ai_llm_queue_depth", "Requests waiting for a slot.", labels=["model"])
            rejected = CounterMetricFamily("edge_ai_llm_rejections", "Requests refused: all slots busy, queue full.", labels=["model"])
            decode = CounterMetricFamily("edge_ai_llm_decode_seconds", "Time inside the model's forward passes.", labels=["model"])
            computed = CounterMetricFamily("edge_ai_llm_prompt_tokens_computed", "Prompt tokens computed (not reused from a slot's KV).", labels=["model"])
            reused = CounterMetricFamily("edge_ai_llm_prompt_tokens_reused", "Prompt tokens reused from a slot's KV.", labels=["model"])
            drafted = CounterMetricFamily("edge_ai_llm_draft_tokens", "Speculative draft tokens decoded, by where they were "
                                          "found (prompt or answer).", labels=["model", "source"])
            accepted = CounterMetricFamily("edge_ai_llm_draft_tokens_accepted", "Draft tokens the model agreed with (kept).",
                                           labels=["model", "source"])
            for m in rt.models.all():
                load = m.engine.load()
                slots.add_metric([m.name], load["slots"])
                busy.add_metric([m.name], load["slots_busy"])
                queue.add_metric([m.name], load["queue_depth"])
                rejected.add_metric([m.name], load["rejected"])
                decode.add_metric([m.name], load["decode_s"])
                computed.add_metric([m.name], load["prompt_tokens"])
                reused.add_metric([m.name], load["prompt_tokens_reused"])
                for source in ("prompt", "answer"):
                    drafted.add_metric([m.name, source], load[f"drafted_from_{source}"])
                    accepted.add_metric([m.name, source], load[f"accepted_from_{source}"])
            yield from (slots, busy, queue, rejected, decode, computed, reused, drafted, accepted)
        if rt.gateway is not None:
            outcomes = CounterMetricFamily("edge_ai_upstream_requests", "Cloud requests by upstream and outcome.",
                                           labels=["upstream", "outcome"])
            state = GaugeMetricFamily("edge_ai_upstream_breaker_state", "Breaker per upstream: 0 closed, 1 half-open, 2 open.",
                                      labels=["upstream"])
            for up in rt.gateway.upstreams:
                for outcome, n in sorted(up.breaker.outcomes.items()):
                    outcomes.add_metric([up.name, outcome], n)
                state.add_metric([up.name], BREAKER_STATES.get(up.breaker.state, 2))
            failovers = CounterMetricFamily("edge_ai_failovers", "Requests answered locally because the cloud failed, by reason.",
                                            labels=["reason"])
            for reason, n in sorted(rt.gateway.failovers.items()):
                failovers.add_metric([reason], n)
            yield from (outcomes, state, failovers)
        yield GaugeMetricFamily("edge_ai_uptime_seconds", "Seconds since start.", value=time.monotonic() - rt.started)


def _histogram(name: str, doc: str, counts: dict[int, int], buckets: tuple[int, ...]) -> HistogramMetricFamily:
    total = sum(counts.values())
    cumulative = [(str(float(b)), sum(n for size, n in counts.items() if size <= b)) for b in buckets]
    cumulative.append(("+Inf", total))
    return HistogramMetricFamily(name, doc, buckets=cumulative, sum_value=float(sum(s * n for s, n in counts.items())))
