"""The one internal request form every dialect is turned into, and the reply every dialect renders.

A request splits into a *scope* (what must match exactly for a cached answer to be right: model,
system prompt, earlier turns, answer-changing parameters, tenant) and a *query* (the final user turn),
which is compared by meaning.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Literal

from edge_ai.errors import BadRequest


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it (Anthropic renders it parsed)


@dataclass(frozen=True)
class Message:
    role: Literal["user", "assistant", "tool"]
    content: str
    tool_calls: tuple[ToolCall, ...] = ()  # an assistant turn's calls
    tool_call_id: str = ""  # a tool turn: the call whose result it is


def merge_turns(turns: list[Message]) -> list[Message]:
    """Chat templates want alternating turns: join consecutive text turns of one role. Tool results and
    turns with calls stay apart: the template shows each in its own place."""
    merged: list[Message] = []
    for t in turns:
        prev = merged[-1] if merged else None
        if prev and prev.role == t.role and t.role != "tool" and not (prev.tool_calls or t.tool_calls):
            merged[-1] = Message(t.role, prev.content + "\n\n" + t.content)
        else:
            merged.append(t)
    return merged


@dataclass(frozen=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})  # JSON schema


@dataclass(frozen=True)
class Constraint:
    """What shape the answer must have; the local model decodes under a grammar made from it.

    `json`: a JSON value (`schema` None: any JSON object). `tool`: a call of one of `tools`, with arguments
    valid for its schema."""

    kind: Literal["json", "tool"]
    schema: dict[str, Any] | None = None
    tools: tuple[Tool, ...] = ()


@dataclass(frozen=True)
class CacheControl:
    """From request headers: `x-edge-cache: no-read | no-write | off` and `x-edge-threshold: 0.95`
    (a stricter or looser similarity for this request's semantic lookup)."""

    read: bool = True
    write: bool = True
    threshold: float | None = None

    @classmethod
    def from_headers(cls, cache: str | None, threshold: str | None = None) -> "CacheControl":
        words = {w.strip().lower() for w in (cache or "").split(",") if w.strip()}
        off = bool(words & {"off", "no-store", "bypass"})
        limit = None
        if threshold:
            try:
                limit = float(threshold)
            except ValueError:
                limit = -1.0
            if not 0.0 <= limit <= 1.0:
                raise BadRequest("x-edge-threshold must be a number between 0 and 1", param="x-edge-threshold")
        return cls(read=not (off or "no-read" in words), write=not (off or "no-write" in words), threshold=limit)


@dataclass
class Request:
    model: str  # the client's model name, echoed back and part of the scope
    kind: Literal["chat", "completion"] = "chat"
    system: str = ""
    messages: tuple[Message, ...] = ()  # chat turns; the last one is the user's query
    prompt: str = ""  # completion prompt (kind == "completion")
    prefill: str = ""  # the start of the answer, given by the client (Anthropic assistant prefill)
    max_tokens: int | None = None
    clamp_max_tokens: bool = False  # max_tokens is only a ceiling (Anthropic): fit it to the context
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    dry_multiplier: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stream: bool = False
    constraint: "Constraint | None" = None  # the answer must be JSON / a tool call (grammar-constrained)
    tools: tuple[Tool, ...] = ()  # offered with tool_choice auto: the model may call one, or answer in text
    answer_params: dict[str, Any] = field(default_factory=dict)  # tools, response format… (scope only)
    tenant: str = ""
    cache: CacheControl = CacheControl()

    @property
    def query(self) -> str:
        return self.prompt if self.kind == "completion" else self.messages[-1].content

    def scope(self) -> dict[str, Any]:
        """Everything but the query that decides what a right answer is."""
        return {
            "model": self.model,
            "kind": self.kind,
            "system": self.system,
            "history": [_turn(m) for m in self.messages[:-1]],
            "prefill": self.prefill,
            "stop": sorted(self.stop),
            "params": self.answer_params,
            "tenant": self.tenant,
        }

    def scope_key(self) -> str:
        key = self.__dict__.get("_scope_key")  # computed once: lookup, store and index all ask
        if key is None:
            key = self.__dict__["_scope_key"] = _scope_digest(self)
        return key

    def exact_key(self) -> str:
        """Key of an identical request: the exact-match path needs no embedding."""
        return _digest(self.scope_key() + "\x00" + self.query)


def _turn(m: Message) -> list[Any]:
    """A turn of the scope's history; calls and the call a result answers are part of it when present."""
    if not (m.tool_calls or m.tool_call_id):
        return [m.role, m.content]
    return [m.role, m.content, [[c.name, c.arguments] for c in m.tool_calls], m.tool_call_id]


_SCOPE_MEMO: dict[tuple, str] = {}  # most requests share a few scopes (a model, a system prompt, no history)


def _scope_digest(req: Request) -> str:
    """The digest of the scope's canonical JSON (the key format stored caches use), memoised by the
    scope's own fields when they are all hashable: encoding the JSON was the largest part of an exact hit."""
    if req.answer_params:  # tools, response formats: nested, rare; encoded each time
        return _digest(json.dumps(req.scope(), sort_keys=True, ensure_ascii=False))
    memo_key = (req.model, req.kind, req.system, req.messages[:-1], req.prefill, req.stop, req.tenant)
    key = _SCOPE_MEMO.get(memo_key)
    if key is None:
        if len(_SCOPE_MEMO) >= 4096:
            _SCOPE_MEMO.clear()
        key = _SCOPE_MEMO[memo_key] = _digest(json.dumps(req.scope(), sort_keys=True, ensure_ascii=False))
    return key


def scope_digest(scope: dict[str, Any]) -> str:
    """The key of a scope as `Request.scope()` gives it (for entries re-scoped by `cache import`)."""
    return _digest(json.dumps(scope, sort_keys=True, ensure_ascii=False))


def exact_digest(scope_key: str, query: str) -> str:
    return _digest(scope_key + "\x00" + query)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


@dataclass
class Final:
    """The end of an answer, whatever produced it."""

    text: str
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None  # which stop string ended it, if one did
    tool_calls: tuple[ToolCall, ...] = ()  # finish_reason is then "tool_calls"
    # A local model offered tools: its highest probability of opening a call, where one was weighed (the
    # answer's start, a line's start where a call was likeliest; LLMEngine._weigh_call)
    call_belief: float | None = None
    # Speculative decoding: tokens guessed from the context and decoded with this answer, and those kept
    drafted: int = 0
    accepted: int = 0
    # A choice task's answer: each group of first tokens' probability (SamplingParams.choices)
    choice_weights: tuple[float, ...] = ()


@dataclass
class Reply:
    """An answer on its way: where it comes from is known before the first byte is sent."""

    source: Literal["cache", "local", "cloud"]
    events: AsyncIterator[str | Final]  # text deltas, then exactly one Final
    prompt_tokens: int = 0
    similarity: float | None = None
    headers: dict[str, str] = field(default_factory=dict)
    cancel: Callable[[], None] = lambda: None  # stop producing (a reply that will never be read)

    def response_headers(self) -> dict[str, str]:
        h = {"x-edge-source": self.source, **self.headers}
        if self.similarity is not None:
            h["x-edge-similarity"] = f"{self.similarity:.4f}"
        return h

    async def collect(self) -> Final:
        try:
            async for event in self.events:
                if isinstance(event, Final):
                    return event
        finally:
            # Final is the last event: close the generator now rather than leave it to the GC's
            # finalizer hook, which wakes the event loop through its self-pipe once per reply.
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        raise RuntimeError("answer ended without a final event")
