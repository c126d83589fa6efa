"""OpenAI Responses wire format (`POST /v1/responses`, what Codex CLI speaks): request schema -> internal
Request, Reply -> a response object and its stream of typed events.

`input` is a string or items: messages (`input_text` / `output_text` parts; system and developer messages
join `instructions`), `function_call` items (the assistant's earlier calls) and `function_call_output`
items (their results). Function tools are offered to the model; other tool types (web search, namespaces…)
are accepted and not offered: the local model cannot run them. Nothing is stored (`store` is accepted,
`previous_response_id` is refused: the client sends the whole conversation, as Codex does). Errors use
the Chat Completions envelope (`render_error` is the OpenAI dialect's).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, AsyncIterator

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from edge_ai.dialects.openai import render_error  # noqa: F401 - this dialect's error envelope
from edge_ai.errors import BadRequest, EdgeError
from edge_ai.request import CacheControl, Constraint, Final, Message, Request, Tool, ToolCall, merge_turns

# Items of a conversation that the local model's answer does not depend on: another model's reasoning, and
# the records of server-side tools it cannot run.
_IGNORED_ITEMS = {"reasoning", "web_search_call", "file_search_call", "image_generation_call", "item_reference"}


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")


class ResponsesRequest(_Wire):
    model: str = Field(min_length=1)
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: StrictInt | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool | None = None
    previous_response_id: str | None = None
    text: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, Any] | None = None

    def functions(self) -> tuple[Tool, ...]:
        out = []
        for i, t in enumerate(self.tools or []):
            if t.get("type") != "function":
                continue  # web search, namespaces, custom tools: accepted, not offered to the model
            if not isinstance(t.get("name"), str) or not t["name"]:
                raise BadRequest(f"tools[{i}]: a function tool needs a name", param=f"tools.{i}.name")
            params = t.get("parameters") or {"type": "object", "properties": {}}
            if not isinstance(params, dict):
                raise BadRequest(f"tools[{i}].parameters must be a JSON schema object", param=f"tools.{i}.parameters")
            out.append(Tool(t["name"], str(t.get("description") or ""), params))
        return tuple(out)

    def constraint(self, functions: tuple[Tool, ...]) -> Constraint | None:
        """A forced call (tool_choice required, or a named function), or a JSON answer (text.format)."""
        choice = self.tool_choice
        if functions and choice not in (None, "auto", "none"):
            if isinstance(choice, dict):
                name = choice.get("name")
                named = tuple(t for t in functions if t.name == name)
                if choice.get("type") != "function" or not named:
                    raise BadRequest(f"tool_choice names '{name}', which is not among the function tools", param="tool_choice")
                return Constraint("tool", tools=named)
            if choice != "required":
                raise BadRequest("tool_choice must be none, auto, required or a named function", param="tool_choice")
            return Constraint("tool", tools=functions)
        fmt = (self.text or {}).get("format") or {}
        kind = fmt.get("type", "text")
        if kind == "text":
            return None
        if kind == "json_object":
            return Constraint("json")
        if kind == "json_schema":
            schema = fmt.get("schema")
            if not isinstance(schema, dict):
                raise BadRequest("text.format.schema must be a JSON schema object", param="text.format.schema")
            return Constraint("json", schema=schema)
        raise BadRequest(f"text.format type '{kind}' is not supported", param="text.format")

    def to_request(self, cache: CacheControl, tenant: str) -> Request:
        if self.previous_response_id:
            raise BadRequest("previous_response_id is not supported: edge-ai stores no responses; send the whole "
                             "conversation in input", param="previous_response_id")
        functions = self.functions()
        constraint = self.constraint(functions)
        system = [self.instructions] if self.instructions else []
        turns: list[Message] = []
        items = [{"type": "message", "role": "user", "content": self.input}] if isinstance(self.input, str) else self.input
        for i, item in enumerate(items):
            kind = item.get("type", "message")
            if kind == "message":
                role, text = item.get("role"), _text(item.get("content"), i)
                if role in ("system", "developer"):
                    system.append(text)
                elif role in ("user", "assistant"):
                    turns.append(Message(role, text))
                else:
                    raise BadRequest(f"input[{i}].role must be user, assistant, system or developer", param=f"input.{i}.role")
            elif kind == "function_call":
                call = _call(item, i)
                if turns and turns[-1].role == "assistant":  # calls of one turn, after its text
                    turns[-1] = Message("assistant", turns[-1].content, turns[-1].tool_calls + (call,))
                else:
                    turns.append(Message("assistant", "", (call,)))
            elif kind == "function_call_output":
                out = item.get("output")
                text = out if isinstance(out, str) else _text(out, i)
                turns.append(Message("tool", text, tool_call_id=str(item.get("call_id") or "")))
            elif kind in _IGNORED_ITEMS:
                continue
            else:
                raise BadRequest(f"input[{i}]: item type '{kind}' is not supported by the local model", param=f"input.{i}.type")
        turns = merge_turns(turns)
        if not turns or turns[-1].role not in ("user", "tool"):
            raise BadRequest("input must end with a user message or a function_call_output", param="input")
        if turns[-1].role == "user" and not turns[-1].content.strip():
            raise BadRequest("the last user message is empty", param="input")
        fields = {"tools": self.tools, "tool_choice": self.tool_choice, "text": self.text}
        params = {k: v for k, v in fields.items() if v and v != {"format": {"type": "text"}}}
        return Request(
            model=self.model,
            kind="chat",
            system="\n\n".join(system),
            messages=tuple(turns),
            max_tokens=self.max_output_tokens,
            clamp_max_tokens=True,  # a ceiling, as Codex sends it: the local context decides
            temperature=self.temperature,
            top_p=self.top_p,
            stream=self.stream,
            constraint=constraint,
            tools=functions if constraint is None and self.tool_choice != "none" else (),
            answer_params=params,
            tenant=tenant,
            cache=cache,
        )


def _text(content: Any, i: int) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise BadRequest(f"input[{i}].content must be a string or a list of parts", param=f"input.{i}.content")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text", "refusal"):
            raise BadRequest(f"input[{i}]: content part type '{kind}' is not supported by the local model", param=f"input.{i}.content")
        parts.append(str(part.get("text") or part.get("refusal") or ""))
    return "\n".join(parts)


def _call(item: dict[str, Any], i: int) -> ToolCall:
    if not isinstance(item.get("name"), str) or not item["name"]:
        raise BadRequest(f"input[{i}]: a function_call needs a name", param=f"input.{i}.name")
    args = item.get("arguments")
    return ToolCall(str(item.get("call_id") or ""), item["name"], args if isinstance(args, str) else json.dumps(args or {}))


# ---- responses ----------------------------------------------------------------------------------


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _usage(final: Final | None) -> dict[str, Any] | None:
    if final is None:
        return None
    return {"input_tokens": final.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": final.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": final.prompt_tokens + final.completion_tokens}


class _Response:
    """The response object as it grows: the same fields in `response.created` and `response.completed`."""

    def __init__(self, body: ResponsesRequest) -> None:
        self.body = body
        self.id = _id("resp")
        self.created = int(time.time())
        self.output: list[dict[str, Any]] = []

    def snapshot(self, status: str, final: Final | None = None) -> dict[str, Any]:
        b = self.body
        incomplete = final is not None and final.finish_reason == "length"
        return {
            "id": self.id, "object": "response", "created_at": self.created,
            "status": "incomplete" if incomplete else status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if incomplete else None,
            "instructions": b.instructions, "max_output_tokens": b.max_output_tokens, "model": b.model,
            "output": list(self.output), "parallel_tool_calls": b.parallel_tool_calls is not False,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": bool(b.store), "temperature": b.temperature, "text": b.text or {"format": {"type": "text"}},
            "tool_choice": b.tool_choice or "auto", "tools": b.tools or [], "top_p": b.top_p,
            "truncation": "disabled", "usage": _usage(final), "metadata": b.metadata or {},
        }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": []}] if status == "completed" else []
    return {"type": "message", "id": item_id, "status": status, "role": "assistant", "content": content}


def _call_item(call: ToolCall, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": "fc_" + call.id.removeprefix("call_"), "call_id": call.id, "name": call.name,
            "arguments": call.arguments if status == "completed" else "", "status": status}


def response_object(body: ResponsesRequest, final: Final) -> dict[str, Any]:
    r = _Response(body)
    if final.text or not final.tool_calls:
        r.output.append(_message_item(_id("msg"), final.text, "completed"))
    r.output += [_call_item(c, "completed") for c in final.tool_calls]
    return r.snapshot("completed", final)


async def response_stream(body: ResponsesRequest, events: AsyncIterator[str | Final]) -> AsyncIterator[str]:
    """response.created, in_progress; for the text a message item (output_item.added, content_part.added,
    output_text.delta…, output_text.done, content_part.done, output_item.done); for each call a
    function_call item (added, function_call_arguments.delta / .done, done); response.completed (or
    response.incomplete when max_output_tokens cut it)."""
    r = _Response(body)
    seq = iter(range(1 << 62))

    def sse(kind: str, data: dict[str, Any]) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **data}, ensure_ascii=False)}\n\n"

    yield sse("response.created", {"response": r.snapshot("in_progress")})
    yield sse("response.in_progress", {"response": r.snapshot("in_progress")})
    msg_id, text = _id("msg"), ""
    opened = False
    async for event in events:
        if isinstance(event, Final):
            index = len(r.output)
            if opened or not event.tool_calls:
                if not opened:
                    yield sse("response.output_item.added", {"output_index": index, "item": _message_item(msg_id, "", "in_progress")})
                    yield sse("response.content_part.added", {"item_id": msg_id, "output_index": index, "content_index": 0,
                                                              "part": {"type": "output_text", "text": "", "annotations": []}})
                part = {"type": "output_text", "text": text, "annotations": []}
                yield sse("response.output_text.done", {"item_id": msg_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})
                yield sse("response.content_part.done", {"item_id": msg_id, "output_index": index, "content_index": 0, "part": part})
                item = _message_item(msg_id, text, "completed")
                yield sse("response.output_item.done", {"output_index": index, "item": item})
                r.output.append(item)
            for call in event.tool_calls:
                index = len(r.output)
                item = _call_item(call, "in_progress")
                yield sse("response.output_item.added", {"output_index": index, "item": item})
                yield sse("response.function_call_arguments.delta", {"item_id": item["id"], "output_index": index, "delta": call.arguments})
                yield sse("response.function_call_arguments.done", {"item_id": item["id"], "output_index": index, "name": call.name,
                                                                    "arguments": call.arguments})
                done = _call_item(call, "completed")
                yield sse("response.output_item.done", {"output_index": index, "item": done})
                r.output.append(done)
            snapshot = r.snapshot("completed", event)
            kind = "response.incomplete" if snapshot["status"] == "incomplete" else "response.completed"
            yield sse(kind, {"response": snapshot})
            return
        if not event:
            continue
        if not opened:
            opened = True
            yield sse("response.output_item.added", {"output_index": 0, "item": _message_item(msg_id, "", "in_progress")})
            yield sse("response.content_part.added", {"item_id": msg_id, "output_index": 0, "content_index": 0,
                                                      "part": {"type": "output_text", "text": "", "annotations": []}})
        text += event
        yield sse("response.output_text.delta", {"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": event, "logprobs": []})


def stream_error(exc: EdgeError) -> str:
    _, body, _ = render_error(exc)
    err = body["error"]
    data = {"type": "error", "sequence_number": 0, "code": err.get("code") or err.get("type"), "message": err["message"],
            "param": err.get("param")}
    return f"event: error\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---- gateway: reading cloud answers -----------------------------------------------------------


def parse_response(body: dict[str, Any]) -> Final | None:
    """A cloud response as a Final for the cache; None when it is not a plain text answer (a call, an
    incomplete or failed response). Raises ValueError when the body is not a response at all."""
    if body.get("object") != "response" or not isinstance(body.get("output"), list):
        raise ValueError("not a Responses API response")
    items = [o for o in body["output"] if o.get("type") != "reasoning"]
    if body.get("status") != "completed" or not items or any(o.get("type") != "message" for o in items):
        return None
    text = "".join(p.get("text", "") for o in items for p in o.get("content") or [] if p.get("type") == "output_text")
    usage = body.get("usage") or {}
    return Final(text, "stop", int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0)))


class RelayState:
    """Follows a relayed cloud stream, so that if it breaks the answer can be finished locally."""

    def __init__(self) -> None:
        self.text = ""
        self.response: dict[str, Any] | None = None  # from response.created
        self.message: tuple[int, str] | None = None  # (output_index, item id) of the open message item
        self.next_index = 0
        self.seq = 0
        self.calls = False
        self.done = False
        self.final_body: dict[str, Any] | None = None

    def observe(self, event: str, data: str) -> None:
        body = json.loads(data)
        kind = body.get("type", event)
        self.seq = max(self.seq, int(body.get("sequence_number", self.seq)) + 1)
        if kind in ("error", "response.failed"):
            raise ValueError(f"error event: {kind}")
        if kind == "response.created":
            self.response = body.get("response")
        elif kind == "response.output_item.added":
            item, index = body.get("item") or {}, int(body.get("output_index", self.next_index))
            self.next_index = index + 1
            self.calls |= item.get("type") not in ("message", "reasoning")
            self.message = (index, str(item.get("id"))) if item.get("type") == "message" else None
        elif kind == "response.output_text.delta":
            self.text += body.get("delta", "")
        elif kind == "response.output_item.done":
            self.message = None
        elif kind in ("response.completed", "response.incomplete"):
            self.done = True
            self.final_body = body.get("response")

    def final(self) -> Final | None:
        if not self.done or self.calls or self.final_body is None:
            return None
        return parse_response(self.final_body)

    async def finish_with(self, model: str, events: AsyncIterator[str | Final]) -> AsyncIterator[str]:
        """The rest of a broken stream, well formed: the open message item (or a new one) gets the rest of
        the text, then it closes, and one response.completed ends the stream."""
        def sse(kind: str, data: dict[str, Any]) -> str:
            self.seq += 1
            return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': self.seq - 1, **data}, ensure_ascii=False)}\n\n"

        response = dict(self.response or {"id": _id("resp"), "object": "response", "created_at": int(time.time()), "model": model,
                                           "status": "in_progress", "output": [], "usage": None})
        if self.response is None:
            yield sse("response.created", {"response": response})
        if self.message is None:
            index, item_id = self.next_index, _id("msg")
            yield sse("response.output_item.added", {"output_index": index, "item": _message_item(item_id, "", "in_progress")})
            yield sse("response.content_part.added", {"item_id": item_id, "output_index": index, "content_index": 0,
                                                      "part": {"type": "output_text", "text": "", "annotations": []}})
            text = ""
        else:
            (index, item_id), text = self.message, self.text
        async for event in events:
            if isinstance(event, Final):
                part = {"type": "output_text", "text": text, "annotations": []}
                yield sse("response.output_text.done", {"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []})
                yield sse("response.content_part.done", {"item_id": item_id, "output_index": index, "content_index": 0, "part": part})
                item = _message_item(item_id, text, "completed")
                yield sse("response.output_item.done", {"output_index": index, "item": item})
                usage = _usage(event)
                yield sse("response.completed", {"response": {**response, "status": "completed", "output": [item], "usage": usage}})
            elif event:
                text += event
                yield sse("response.output_text.delta", {"item_id": item_id, "output_index": index, "content_index": 0,
                                                         "delta": event, "logprobs": []})
