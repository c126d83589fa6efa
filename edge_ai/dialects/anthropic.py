"""Anthropic Messages wire format: request schemas -> internal Request, Reply -> messages and SSE events.

Offered client tools (`tool_choice` auto) are shown to the model, which may call them: its calls come back
as `tool_use` blocks (tool_calls.py reads them); a forced tool call (`tool_choice` any/tool) is decoded
under a grammar. tool_use / tool_result blocks in the history are the turns' calls and tool results;
thinking blocks are dropped. `max_tokens` is a ceiling, cut to what fits the local context; `thinking` is
accepted and no thinking block is produced.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from edge_ai.errors import BadRequest, EdgeError, Overloaded, RateLimited
from edge_ai.request import CacheControl, Constraint, Final, Message, Request, Tool, ToolCall, merge_turns
from edge_ai.tool_calls import FAILED

# ---- errors ---------------------------------------------------------------------------------

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"), "message": message}}


def render_error(exc: EdgeError) -> tuple[int, dict[str, Any], dict[str, str]]:
    # Anthropic clients retry 529 overloaded_error; a busy or still-loading server is exactly that
    if isinstance(exc, RateLimited):  # the client's own limit: Anthropic's 429, not an overloaded server
        return 429, error_body(429, exc.message), {"retry-after": str(exc.retry_after)}
    if isinstance(exc, Overloaded) or exc.status == 503:
        return 529, error_body(529, exc.message), {"retry-after": str(getattr(exc, "retry_after", 1))}
    return exc.status, error_body(exc.status, exc.message), {}


# ---- request schemas --------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class Block(_Wire):
    type: str
    text: str | None = None


# Claude Code opens its system prompt with a block of billing metadata whose value changes from request
# to request: not an instruction, and left in it would make every request a new prompt (no KV reuse) and a
# new cache scope (no hit).
BILLING_BLOCK = "x-anthropic-billing-header:"


class AnthropicMessage(_Wire):
    role: Literal["user", "assistant", "system"]  # system: instructions between turns (Claude Code sends them)
    content: str | list[dict[str, Any]]


class MessagesRequest(_Wire):
    model: str = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1)  # strict: true or "8" is not a token count
    messages: list[AnthropicMessage] = Field(min_length=1)
    system: str | list[Block] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = None
    stream: bool = False
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def constraint(self) -> Constraint | None:
        """A forced tool call: tool_choice any (one of the tools) or tool (the one named)."""
        choice = (self.tool_choice or {}).get("type", "auto")
        if not self.tools or choice in ("auto", "none"):
            return None
        tools = tuple(_tool(t, i) for i, t in enumerate(self.tools))
        if choice == "tool":
            name = (self.tool_choice or {}).get("name")
            tools = tuple(t for t in tools if t.name == name)
            if not tools:
                raise BadRequest(f"tool_choice names '{name}', which is not among the tools")
        elif choice != "any":
            raise BadRequest("tool_choice.type must be auto, any, tool or none")
        return Constraint("tool", tools=tools)

    def offered(self) -> tuple[Tool, ...]:
        """Client tools the model may call or not (tool_choice auto or absent); server tools (web search…)
        have no schema and are not offered: the local model cannot run them."""
        if not self.tools or (self.tool_choice or {}).get("type", "auto") != "auto":
            return ()
        return tuple(_tool(t, i) for i, t in enumerate(self.tools) if isinstance(t.get("input_schema"), dict))

    def to_request(self, cache: CacheControl, tenant: str) -> Request:
        constraint = self.constraint()
        # System messages among the turns join the system prompt, in order: a chat template takes
        # instructions there, and the conversation stays alternating user and assistant turns.
        instructions = [_content(m.content, i) for i, m in enumerate(self.messages) if m.role == "system"]
        turns = merge_turns([t for i, m in enumerate(self.messages) if m.role != "system" for t in _turns(m, i)])
        prefill = ""
        if turns and turns[-1].role == "assistant" and not turns[-1].tool_calls:  # prefill: the answer continues from it
            prefill = turns.pop().content.rstrip()
        if not turns or turns[-1].role not in ("user", "tool"):
            raise BadRequest("messages: the conversation must contain a user turn before the answer")
        if turns[-1].role == "user" and not turns[-1].content.strip():
            raise BadRequest("messages: the last user message is empty")
        system = self.system if isinstance(self.system, str) else "\n\n".join(
            b.text or "" for b in self.system or [] if not (b.text or "").startswith(BILLING_BLOCK))
        system = "\n\n".join(t for t in (system, *instructions) if t)
        params = {k: v for k, v in {"tools": self.tools, "tool_choice": self.tool_choice}.items() if v}
        return Request(
            model=self.model,
            kind="chat",
            system=system,
            messages=tuple(turns),
            prefill=prefill,
            max_tokens=self.max_tokens,
            clamp_max_tokens=True,  # clients send 8k-64k as a ceiling; the local context decides
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            stop=tuple(self.stop_sequences or ()),
            stream=self.stream,
            constraint=constraint,
            tools=self.offered() if constraint is None else (),
            answer_params=params,
            tenant=tenant,
            cache=cache,
        )


def _tool(t: dict[str, Any], i: int) -> Tool:
    """A client tool (name, description, input_schema). Server tools (web search…) have a type and no schema:
    the local model cannot run them, so they cannot be forced."""
    if not isinstance(t.get("name"), str) or not t["name"]:
        raise BadRequest(f"tools.{i}: a tool needs a name")
    schema = t.get("input_schema")
    if not isinstance(schema, dict):
        raise BadRequest(f"tools.{i}: tool '{t['name']}' has no input_schema; only client tools can be forced")
    return Tool(t["name"], str(t.get("description") or ""), schema)


class CountTokensRequest(MessagesRequest):
    max_tokens: int = 1  # not part of count_tokens requests


def _turns(m: AnthropicMessage, i: int) -> list[Message]:
    """One wire message as turns: an assistant's tool_use blocks are its calls; a user's tool_result blocks
    are tool turns (each answering its call), then the user's own text, if any."""
    if isinstance(m.content, str):
        return [Message(m.role, m.content)]  # type: ignore[arg-type]
    if m.role == "assistant":
        calls = tuple(ToolCall(str(b.get("id") or ""), str(b.get("name") or ""), json.dumps(b.get("input") or {}, ensure_ascii=False))
                      for b in m.content if b.get("type") == "tool_use")
        text = _content([b for b in m.content if b.get("type") != "tool_use"], i)
        return [Message("assistant", text, tool_calls=calls)]
    results = [b for b in m.content if b.get("type") == "tool_result"]
    out = []
    for b in results:
        inner = b.get("content", "")
        text = inner if isinstance(inner, str) else _content(inner, i)
        if b.get("is_error"):
            text = FAILED + text
        out.append(Message("tool", text, tool_call_id=str(b.get("tool_use_id") or "")))
    rest = [b for b in m.content if b.get("type") != "tool_result"]
    if rest or not results:
        text = _content(rest, i)
        if text or not results:
            out.append(Message("user", text))
    return out


def _content(content: str | list[dict[str, Any]], i: int) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            parts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            parts.append(f"[called tool {block.get('name', '?')} with {json.dumps(block.get('input', {}))}]")
        elif kind == "tool_result":
            inner = block.get("content", "")
            inner = inner if isinstance(inner, str) else _content(inner, i)
            parts.append(f"[tool result]\n{inner}")
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the local model's answer does not depend on another model's reasoning
        else:
            raise BadRequest(f"messages.{i}.content: block type '{kind}' is not supported by the local model")
    return "\n".join(parts)


# ---- responses ----------------------------------------------------------------------------------


def _stop_reason(f: Final) -> str:
    if f.tool_calls:
        return "tool_use"
    if f.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if f.stop_sequence else "end_turn"


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }


def new_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def message_response(model: str, final: Final) -> dict[str, Any]:
    return {
        "id": new_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": _blocks(final),
        "stop_reason": _stop_reason(final),
        "stop_sequence": final.stop_sequence,
        "usage": _usage(final.prompt_tokens, final.completion_tokens),
    }


def _blocks(final: Final) -> list[dict[str, Any]]:
    if final.tool_calls:
        text = [{"type": "text", "text": final.text}] if final.text else []
        return text + [{"type": "tool_use", "id": _tool_use_id(c.id), "name": c.name, "input": json.loads(c.arguments)}
                       for c in final.tool_calls]
    return [{"type": "text", "text": final.text}]


def _tool_use_id(call_id: str) -> str:
    return "toolu_" + call_id.removeprefix("call_")


async def message_stream(model: str, events: AsyncIterator[str | Final], input_tokens: int) -> AsyncIterator[str]:
    """message_start, content_block_start, ping, content_block_delta…, content_block_stop, message_delta, message_stop."""
    start = {
        "id": new_id(),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage(input_tokens, 1),
    }
    yield _sse("message_start", {"type": "message_start", "message": start})
    text_open = False  # a tool call's answer has no text block: it opens with the first event that is not one
    pinged = False
    async for event in events:
        if not text_open and not (isinstance(event, Final) and event.tool_calls):
            yield _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            text_open = True
        if not pinged:
            yield _sse("ping", {"type": "ping"})
            pinged = True
        if isinstance(event, Final):
            if text_open:
                yield _sse("content_block_stop", {"type": "content_block_stop", "index": 0})
            for i, call in enumerate(event.tool_calls, start=int(text_open)):
                block = {"type": "tool_use", "id": _tool_use_id(call.id), "name": call.name, "input": {}}
                yield _sse("content_block_start", {"type": "content_block_start", "index": i, "content_block": block})
                delta = {"type": "input_json_delta", "partial_json": call.arguments}
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": i, "delta": delta})
                yield _sse("content_block_stop", {"type": "content_block_stop", "index": i})
            delta = {"stop_reason": _stop_reason(event), "stop_sequence": event.stop_sequence}
            yield _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": {"output_tokens": event.completion_tokens}})
            yield _sse("message_stop", {"type": "message_stop"})
        elif event:
            yield _sse("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": event}})


def stream_error(exc: EdgeError) -> str:
    _, body, _ = render_error(exc)
    return _sse("error", body)


def _sse(event: str, body: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(body, ensure_ascii=False)}\n\n"


# ---- gateway: reading cloud answers -----------------------------------------------------------

_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def parse_response(body: dict[str, Any]) -> Final | None:
    """A cloud message as a Final for the cache; None when it is not a plain text answer (tool use).
    Raises ValueError when the body is not an Anthropic message at all."""
    if body.get("type") != "message" or not isinstance(body.get("content"), list):
        raise ValueError("not an Anthropic message")
    if any(b.get("type") != "text" for b in body["content"]) or body.get("stop_reason") not in _FINISH:
        return None
    usage = body.get("usage") or {}
    text = "".join(b.get("text", "") for b in body["content"])
    return Final(text, _FINISH[body["stop_reason"]], int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)), body.get("stop_sequence"))


class RelayState:
    """Follows a relayed cloud stream, so that if it breaks the answer can be finished locally."""

    def __init__(self) -> None:
        self.text = ""
        self.started = False
        self.open: tuple[int, str] | None = None  # (index, type) of the open content block
        self.next_index = 0
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.tool_use = False
        self.done = False
        self.model = ""

    def observe(self, event: str, data: str) -> None:
        body = json.loads(data)
        kind = body.get("type", event)
        if kind == "error":
            raise ValueError(f"error event: {body.get('error', {}).get('type', 'unknown')}")
        if kind == "message_start":
            self.started = True
            msg = body.get("message", {})
            self.model = msg.get("model", "")
            self.input_tokens = int((msg.get("usage") or {}).get("input_tokens", 0))
        elif kind == "content_block_start":
            block = body.get("content_block", {})
            self.open = (int(body.get("index", self.next_index)), block.get("type", "text"))
            self.next_index = self.open[0] + 1
            self.tool_use |= block.get("type") == "tool_use"
            self.text += block.get("text", "") if block.get("type") == "text" else ""
        elif kind == "content_block_delta":
            delta = body.get("delta", {})
            if delta.get("type") == "text_delta":
                self.text += delta.get("text", "")
        elif kind == "content_block_stop":
            self.open = None
        elif kind == "message_delta":
            self.stop_reason = body.get("delta", {}).get("stop_reason")
            self.stop_sequence = body.get("delta", {}).get("stop_sequence")
            self.output_tokens = int((body.get("usage") or {}).get("output_tokens", self.output_tokens))
        elif kind == "message_stop":
            self.done = True

    def final(self) -> Final | None:
        if not self.done or self.tool_use or self.stop_reason not in _FINISH:
            return None
        return Final(self.text, _FINISH[self.stop_reason], self.input_tokens, self.output_tokens, self.stop_sequence)

    async def finish_with(self, model: str, events: AsyncIterator[str | Final]) -> AsyncIterator[str]:
        """The rest of a broken stream, well formed: close what is open, continue in a text block, stop once."""
        if self.stop_reason is not None:  # the answer was complete; only the closing event was lost
            yield _sse("message_stop", {"type": "message_stop"})
            return
        if not self.started:
            start = {"id": new_id(), "type": "message", "role": "assistant", "model": model, "content": [],
                     "stop_reason": None, "stop_sequence": None, "usage": _usage(self.input_tokens, 1)}
            yield _sse("message_start", {"type": "message_start", "message": start})
        if self.open is not None and self.open[1] != "text":
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": self.open[0]})
            self.open = None
        if self.open is None:
            index = self.next_index
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})
        else:
            index = self.open[0]
        async for event in events:
            if isinstance(event, Final):
                yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
                delta = {"stop_reason": _stop_reason(event), "stop_sequence": event.stop_sequence}
                usage = {"output_tokens": self.output_tokens + event.completion_tokens}
                yield _sse("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
                yield _sse("message_stop", {"type": "message_stop"})
            elif event:
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": event}})
