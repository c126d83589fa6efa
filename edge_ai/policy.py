"""The one answer policy every dialect goes through: semantic cache, then the local path (the pool of
inference servers when there is one, the in-process model last)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import AsyncIterator, Callable

import numpy as np

from edge_ai.cache import Hit, SemanticCache
from edge_ai.call_need import needless
from edge_ai.edit_blocks import last_results_failed, repeats, workspace
from edge_ai.engines.llm import Task
from edge_ai.engines.pool import Backend, Broken, Pool, takes
from edge_ai.errors import Overloaded
from edge_ai.local_models import LocalModel, LocalModels
from edge_ai.request import CacheControl, Final, Reply, Request, ToolCall
from edge_ai.tool_calls import compact_request, new_call_id, read_stream

log = logging.getLogger("edge_ai.policy")


# a call_least no probability reaches: no call opens anywhere in the answer (see LLMEngine._weigh_call)
CALLS_RULED_OUT = 2.0


class AnswerPolicy:
    def __init__(self, cache: SemanticCache, models: LocalModels, default_max_tokens: int, pool: Pool | None = None) -> None:
        self.cache = cache
        self.models = models
        self.default_max_tokens = default_max_tokens
        self.pool = pool

    async def answer(self, req: Request) -> Reply:
        """Validate against the model first (so bad input never reaches the cache), then answer."""
        model = self.models.get(req.model)
        if req.tools and not model.knows_tools:
            # A model whose template has no tool format answers in text, as if it chose no tool: offered to
            # SmolLM2 in its system prompt, tools got 0 of 29 agent tasks right and 5 of 18 plain questions
            # a call (BENCHMARKS.md, the agent eval). The cache scope keeps the tools all the same.
            req = replace(req, tools=())
        model.answer_room(req, self.default_max_tokens)  # a max_tokens with no room is refused before any lookup
        vector = None
        # a forced tool call is never cached (a stored answer is text), so there is nothing to look up
        if req.cache.read and not (req.constraint is not None and req.constraint.kind == "tool"):
            look = await self.cache.lookup(req)
            vector = look.vector
            if look.hit is not None:
                hit = look.hit
                n = len(model.prepare(req, self.default_max_tokens).tokens)  # memoised for a prompt seen before
                return Reply("cache", self._cached(hit, n), n, similarity=hit.similarity)
        prep = None
        if self.pool is not None and takes(req):
            prep = model.prepare(req, self.default_max_tokens)
            opened = await self.pool.open(req, prep.params.max_tokens, prep.params.temperature)
            if opened is not None:
                backend, events, lease = opened
                n = len(prep.tokens)
                reply = Reply("local", self._pooled(req, backend, events, vector, n), n, cancel=lease.release)
                reply.headers["x-edge-backend"] = backend.name
                return reply
        # A miss that meets a full queue is refused before its prompt is tokenized: in a surge most new
        # questions are, and their tokenizing was a tenth of the event loop's time (RELIABILITY.md).
        model.engine.check_room()
        if prep is None:  # else the pool's, every backend having been down or full
            prep = model.prepare(req, self.default_max_tokens)
        tokens, params = prep.tokens, prep.params
        task = model.engine.submit(tokens, params)
        current = [task]

        def without_calls() -> Task:  # the same prompt, asked again with no call allowed to open
            current[0] = model.engine.submit(tokens, replace(params, call_least=CALLS_RULED_OUT))
            return current[0]

        def without_tools() -> Task:  # general knowledge answers it: asked as if no tool were offered
            # in the compact form's system prompt and turns: an agent's whole system prompt is thousands of
            # tokens to prefill, and its start shares the tool prompt's KV
            plain = model.prepare(replace(compact_request(req), tools=()), self.default_max_tokens)
            current[0] = model.engine.submit(plain.tokens, plain.params)
            return current[0]

        again = without_calls if params.call_least > 0 else None
        plain = without_tools if req.tools and model.check_calls else None
        reply = Reply("local", self._local(req, task, vector, again, plain, model), len(tokens),
                      cancel=lambda: current[0].cancel())
        if prep.dropped:
            reply.headers["x-edge-truncated"] = str(prep.dropped)
        return reply

    async def _cached(self, hit: Hit, prompt_tokens: int) -> AsyncIterator[str | Final]:
        e = hit.entry
        yield e.answer
        yield Final(e.answer, e.finish_reason, prompt_tokens, e.completion_tokens)

    async def _local(self, req: Request, task: Task, vector: np.ndarray | None,
                     again: Callable[[], Task] | None = None, plain: Callable[[], Task] | None = None,
                     model: LocalModel | None = None, calls: bool = True) -> AsyncIterator[str | Final]:
        """A local answer, its calls read (unless `calls` is off). An answer whose call is not to go out is
        asked once more:
        - `again`, with calls ruled out, where it only repeats a call whose result is already in the
          conversation. Shown a file it had just read, Qwen2.5-Coder-1.5B read it again (Claude Code refuses
          such a call: "Wasted call — file unchanged since your last Read"); asked again without calls, it
          answers from what it read;
        - `plain`, without the tools, where `model`, asked apart, finds the call needless: general
          knowledge answers the request (call_need). With the tools still in its prompt and only calls
          ruled out, the 1.5B narrated the call it could not make ("To find the capital of France, you
          can use the Bash function: <Bash>curl …"); without them it answers."""
        tool = req.constraint is not None and req.constraint.kind == "tool"
        events = task.stream()
        if req.tools and not tool and calls:  # the model may call an offered tool: its calls are read out of its text
            # A shell block answering results reports what was run, unless a call failed: then it is the
            # next attempt (Codex's `cat greet.py` found no file; the model offered `echo … > greet.py`).
            answering_results = bool(req.messages) and req.messages[-1].role == "tool"
            shell_blocks = not answering_results or last_results_failed(req.messages)
            events = read_stream(events, req.tools, shell_blocks=shell_blocks, workspace=workspace(req.messages))
        async for event in events:
            if tool:  # the call's JSON is not answer text: it goes out whole, as a tool call, at the end
                if not isinstance(event, Final):
                    continue
                yield as_tool_call(event)
                return
            if isinstance(event, Final) and event.tool_calls:
                retry, keep_lead = None, True
                try:  # a queue too full to ask again lets the call go out as it is
                    if again is not None and repeats(event.tool_calls, req.messages):
                        log.info("a call repeated with its result in the conversation: asked again without calls")
                        retry = self._local(req, again(), vector)  # a code block may still be an edit
                    elif plain is not None and model is not None and await needless(model, req.messages):
                        log.info("a call general knowledge makes needless: asked again without the tools")
                        retry = self._local(req, plain(), vector, calls=False)  # a shell block is text here
                        # the lead announced the needless call ("I need to search the documentation…"): a
                        # stream has shown it, but the answer given whole (and stored) is the one asked again
                        keep_lead = False
                except Overloaded:
                    log.warning("no room to ask again: the call goes out")
                if retry is not None:
                    lead = event.text + "\n\n" if event.text and keep_lead else ""
                    if event.text:  # text before the call has been streamed
                        yield "\n\n"
                    async for retried in retry:
                        yield replace(retried, text=lead + retried.text) if isinstance(retried, Final) else retried
                    return
            # a call is an action for this turn, not an answer to keep: only text answers are stored
            if isinstance(event, Final) and req.cache.write and not event.tool_calls:
                # stored before the final event goes out; a client that left earlier stored nothing
                try:
                    await self.cache.put(req, event, "local", vector)
                except Exception:
                    log.exception("cache write failed; the answer is still served")
            yield event

    async def _pooled(self, req: Request, backend: Backend, events: AsyncIterator[str | Final], vector: np.ndarray | None,
                      prompt_tokens: int) -> AsyncIterator[str | Final]:
        """A backend's answer, stored as a local one (with the backend's name). A stream that breaks is
        finished in-process from the text already sent, and not stored: it is neither's alone."""
        try:
            async for event in events:
                if isinstance(event, Final):
                    final = replace(event, prompt_tokens=prompt_tokens)
                    if req.cache.write:
                        try:
                            await self.cache.put(req, final, "local", vector, backend=backend.name)
                        except Exception:
                            log.exception("cache write failed; the answer is still served")
                    yield final
                    return
                yield event
        except Broken as broken:
            log.warning("%s; finishing in-process", broken)
            rest = self.continue_locally(req, broken.text)
            async for event in rest.events:
                if isinstance(event, Final):
                    event = replace(event, text=broken.text + event.text, prompt_tokens=prompt_tokens,
                                    completion_tokens=broken.completion_tokens + event.completion_tokens)
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
        prep = model.prepare(cont, self.default_max_tokens)
        task = model.engine.submit(prep.tokens, prep.params)
        return Reply("local", self._local(cont, task, None), len(prep.tokens), cancel=task.cancel)

    def count_tokens(self, req: Request) -> int:
        """What the request's prompt is before any cut to fit the context (what the client sent)."""
        return len(self.models.get(req.model).prompt_tokens(req))


def as_tool_call(final: Final) -> Final:
    """A grammar-constrained {"name", "arguments"} answer as a tool call. Cut at max_tokens, the JSON is
    incomplete: it is then left as text with finish_reason "length", which is what happened."""
    try:
        call = json.loads(final.text)
        name, args = call["name"], call["arguments"]
    except (ValueError, KeyError, TypeError):
        return final
    tc = ToolCall(new_call_id(), str(name), json.dumps(args, ensure_ascii=False))
    return replace(final, text="", finish_reason="tool_calls", tool_calls=(tc,))
