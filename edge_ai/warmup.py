"""Batch warm-up: fill the cache before the outage.

Input is JSONL; each line's format is detected on its own:
  - a JSON string (or a line that is not JSON at all): a prompt, asked as one user turn of `--model`;
  - an OpenAI chat-completions request body, or an Anthropic messages request body;
  - a log line `{"request": {...}, "response": {...}}` in either dialect: the recorded answer is
    imported as it is, with no model call.

Prompts without answers are deduplicated (exact, then near-duplicates by embedding within one scope),
skipped when already cached, and answered through the cloud when upstreams are configured (with backoff;
falling back per prompt) or else through the local continuous-batching core. Every answer is written
with the scope live traffic would have, as soon as it is complete: killing a run loses nothing finished,
and re-running skips what is cached.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_ai.cache import SemanticCache
from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.engines.index import VectorIndex
from edge_ai.engines.upstream import Upstream, UpstreamFailure
from edge_ai.errors import EdgeError
from edge_ai.dialects.validate import parse
from edge_ai.policy import AnswerPolicy
from edge_ai.request import CacheControl, Final, Request

log = logging.getLogger("edge_ai.warmup")


@dataclass
class Item:
    line: str  # "file:lineno"
    req: Request
    body: dict[str, Any]  # the request in its own dialect (what the cloud is sent)
    dialect: str
    answer: Final | None = None  # a recorded answer: imported as is


@dataclass
class WarmReport:
    lines: int = 0
    imported: int = 0
    answered: Counter = field(default_factory=Counter)  # by source: cloud / local
    duplicates: int = 0
    already_cached: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"lines": self.lines, "imported": self.imported, "answered": dict(self.answered), "duplicates_skipped": self.duplicates,
                "already_cached": self.already_cached, "failed": len(self.failures), "failures": self.failures}

    def summary(self) -> list[str]:
        out = [
            f"lines read:       {self.lines}",
            f"imported answers: {self.imported}",
            "answered:         " + (", ".join(f"{k}={v}" for k, v in sorted(self.answered.items())) or "0"),
            f"duplicates:       {self.duplicates}",
            f"already cached:   {self.already_cached}",
            f"failed:           {len(self.failures)}",
        ]
        out += [f"  {f['line']}: {f['reason']}" for f in self.failures[:20]]
        return out


def read_inputs(paths: list[Path], model: str, report: WarmReport, max_tokens: int | None = None, tenant: str = "") -> list[Item]:
    """Every line as an item; `tenant` is whose cache the answers go into (a key's tenant when the server has keys)."""
    items: list[Item] = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            for n, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                report.lines += 1
                where = f"{path.name}:{n}"
                try:
                    item = _parse_line(raw, model, where, max_tokens)
                    if tenant:
                        item.req = replace(item.req, tenant=tenant)
                    items.append(item)
                except (EdgeError, ValueError, TypeError) as exc:
                    msg = exc.message if isinstance(exc, EdgeError) else str(exc)
                    report.failures.append({"line": where, "reason": f"bad input: {msg}"})
    return items


def _parse_line(raw: str, model: str, where: str, max_tokens: int | None = None) -> Item:
    try:
        data: Any = json.loads(raw)
    except json.JSONDecodeError as exc:
        if raw.lstrip().startswith(("{", "[")):  # a broken JSON line (a truncated log), not a prompt
            raise ValueError(f"not valid JSON: {exc}") from None
        data = raw.strip()  # a plain-text line is a prompt
    if isinstance(data, str):
        if not data.strip():
            raise ValueError("empty prompt")
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": data}]}
        if max_tokens:
            body["max_tokens"] = max_tokens
        return Item(where, parse(oa.ChatCompletionRequest, body).to_request(CacheControl(), ""), body, "openai")
    if not isinstance(data, dict):
        raise ValueError("a line must be a JSON string or object")
    if "request" in data and "response" in data:
        item = _parse_request(data["request"], model, where)
        item.answer = _parse_answer(data["response"], item.dialect)
        return item
    return _parse_request(data, model, where)


def _parse_request(body: Any, model: str, where: str) -> Item:
    if not isinstance(body, dict) or "messages" not in body:
        raise ValueError("a request needs 'messages'")
    body = {"model": model, **body}
    # A body using only fields both dialects share becomes the same internal request either way (one
    # cache); a top-level `system`, or anything only Anthropic accepts, makes it an Anthropic request.
    if "system" not in body:
        try:
            return Item(where, parse(oa.ChatCompletionRequest, body).to_request(CacheControl(), ""), body, "openai")
        except EdgeError:
            pass
    anth = {"max_tokens": 1024, **body}
    return Item(where, parse(an.MessagesRequest, anth).to_request(CacheControl(), ""), anth, "anthropic")


def _parse_answer(resp: Any, dialect: str) -> Final:
    if not isinstance(resp, dict):
        raise ValueError("'response' must be an object")
    for d in ((an, oa) if resp.get("type") == "message" else (oa, an)):
        try:
            final = d.parse_response(resp)
        except ValueError:
            continue
        if final is None:
            raise ValueError("the recorded answer is not plain text (tool use?)")
        return final
    raise ValueError("'response' is neither an OpenAI chat completion nor an Anthropic message")


class Warmer:
    def __init__(self, cache: SemanticCache, policy: AnswerPolicy, upstreams: list[Upstream], *, concurrency: int = 16,
                 retries: int = 3, threshold: float | None = None) -> None:
        self.cache, self.policy, self.upstreams = cache, policy, upstreams
        self.concurrency, self.retries = concurrency, retries
        self.threshold = cache.threshold if threshold is None else threshold

    async def run(self, items: list[Item], report: WarmReport, progress: Callable[[int], None] = lambda n: None) -> WarmReport:
        imports = [i for i in items if i.answer is not None]
        for start in range(0, len(imports), 256):  # embedded in batches, stored one transaction each
            chunk = imports[start : start + 256]
            vecs = await self.cache.embedder.embed([i.req.query for i in chunk])
            for item, vec in zip(chunk, vecs):
                assert item.answer is not None
                await self.cache.put(item.req, item.answer, "import", vec)
                report.imported += 1
                progress(1)
        todo = await self._dedupe([i for i in items if i.answer is None], report, progress)
        sem = asyncio.Semaphore(self.concurrency)

        async def one(item: Item) -> None:
            async with sem:
                try:
                    look = await self.cache.lookup(item.req)
                    if look.hit is not None:
                        report.already_cached += 1
                        return
                    report.answered[await self._answer(item, look.vector)] += 1
                except EdgeError as exc:
                    report.failures.append({"line": item.line, "reason": exc.message})
                except Exception as exc:  # noqa: BLE001 - one prompt's failure must not stop the run
                    report.failures.append({"line": item.line, "reason": f"{type(exc).__name__}: {exc}"})
                finally:
                    progress(1)

        await asyncio.gather(*(one(i) for i in todo))
        return report

    async def _dedupe(self, items: list[Item], report: WarmReport, progress: Callable[[int], None]) -> list[Item]:
        seen: set[str] = set()
        unique: list[Item] = []
        for item in items:
            key = item.req.exact_key()
            if key in seen:
                report.duplicates += 1
                progress(1)
                continue
            seen.add(key)
            unique.append(item)
        if not unique:
            return unique
        vecs = await self.cache.embedder.embed_all([i.req.query for i in unique])
        earlier = VectorIndex(self.cache.embedder.dim, background=False)  # the prompts kept so far, by scope
        kept: list[Item] = []
        for n, (item, vec) in enumerate(zip(unique, vecs)):
            scope, query = item.req.scope_key(), item.req.query
            # a near-duplicate is what a live lookup would take as a hit: one of the 4 nearest earlier
            # prompts of its scope passes the same decision (vetoes and differing stretch included)
            for i, _ in earlier.search(scope, vec, 4):
                prior = int(i)
                if await self.cache.score(float(vecs[prior] @ vec), unique[prior].req.query, query, self.threshold) >= self.threshold:
                    report.duplicates += 1
                    progress(1)
                    break
            else:
                earlier.add(scope, str(n), vec)
                kept.append(item)
        return kept

    async def _answer(self, item: Item, vector: np.ndarray | None) -> str:
        for up in (u for u in self.upstreams if u.dialect == item.dialect):
            final = await self._from_cloud(up, item)
            if final is not None:
                await self.cache.put(item.req, final, "cloud", vector)
                return "cloud"
        # lookup was done above; the policy's own write stores the answer
        reply = await self.policy.answer(replace(item.req, cache=CacheControl(read=False, write=True)))
        await reply.collect()
        return "local"

    async def _from_cloud(self, up: Upstream, item: Item) -> Final | None:
        body = {**item.body, "stream": False}
        for attempt in range(self.retries):
            if not up.breaker.allow():
                return None
            try:
                resp, answer = await up.send(body, {})
                up.breaker.success()
                if not resp.is_success:
                    return None  # the cloud refuses this request: answer it locally
                return (an if up.dialect == "anthropic" else oa).parse_response(answer)
            except (UpstreamFailure, ValueError) as exc:
                up.breaker.failure(str(exc))
                wait = getattr(exc, "retry_after", None) or 0.5 * 2**attempt
                await asyncio.sleep(min(wait, 30))
        return None
