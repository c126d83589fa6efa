"""The one answer policy every dialect goes through: semantic cache, then the local model."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import AsyncIterator

import numpy as np

from edge_ai.cache import Hit, SemanticCache
from edge_ai.engines.llm import Task
from edge_ai.local_models import LocalModels
from edge_ai.request import CacheControl, Final, Reply, Request

log = logging.getLogger("edge_ai.policy")


class AnswerPolicy:
    def __init__(self, cache: SemanticCache, models: LocalModels, default_max_tokens: int) -> None:
        self.cache = cache
        self.models = models
        self.default_max_tokens = default_max_tokens

    async def answer(self, req: Request) -> Reply:
        """Validate against the model first (so bad input never reaches the cache), then answer."""
        model = self.models.get(req.model)
        tokens = model.prompt_tokens(req)
        params = model.sampling(req, len(tokens), self.default_max_tokens)
        vector = None
        if req.cache.read:
            look = await self.cache.lookup(req)
            vector = look.vector
            if look.hit is not None:
                hit = look.hit
                return Reply("cache", self._cached(hit, len(tokens)), len(tokens), similarity=hit.similarity)
        task = model.engine.submit(tokens, params)
        return Reply("local", self._local(req, task, vector), len(tokens), cancel=task.cancel)

    async def _cached(self, hit: Hit, prompt_tokens: int) -> AsyncIterator[str | Final]:
        e = hit.entry
        yield e.answer
        yield Final(e.answer, e.finish_reason, prompt_tokens, e.completion_tokens)

    async def _local(self, req: Request, task: Task, vector: np.ndarray | None) -> AsyncIterator[str | Final]:
        async for event in task.stream():
            if isinstance(event, Final) and req.cache.write:
                # stored before the final event goes out; a client that left earlier stored nothing
                try:
                    await self.cache.put(req, event, "local", vector)
                except Exception:
                    log.exception("cache write failed; the answer is still served")
            yield event

    def continue_locally(self, req: Request, answer_so_far: str) -> Reply:
        """Finish an answer another model started (a cloud stream that broke): the local model
        continues from the text already sent. Nothing is cached: the answer is neither's alone."""
        model = self.models.get(req.model)
        spent = len(model.engine.tokenize(answer_so_far)) if answer_so_far else 0
        limit = (req.max_tokens or self.default_max_tokens) - spent
        cont = replace(
            req,
            prefill=req.prefill + answer_so_far,
            max_tokens=max(limit, 1),
            clamp_max_tokens=True,
            cache=CacheControl(read=False, write=False),
        )
        tokens = model.prompt_tokens(cont)
        task = model.engine.submit(tokens, model.sampling(cont, len(tokens), self.default_max_tokens))
        return Reply("local", self._local(cont, task, None), len(tokens), cancel=task.cancel)

    def count_tokens(self, req: Request) -> int:
        return len(self.models.get(req.model).prompt_tokens(req))
