"""OpenAI wire format: request schemas -> internal Request, Reply -> responses and SSE chunks."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, AsyncIterator, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from edge_ai.errors import BadRequest, EdgeError, Overloaded
from edge_ai.request import CacheControl, Constraint, Final, Message, Request, Tool, ToolCall, merge_turns

# ---- errors ---------------------------------------------------------------------------------

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # what OpenAI sends for a bad key, with code invalid_api_key
    403: "invalid_request_error",
    404: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "server_error",
}


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param, "code": code}}


def render_error(exc: EdgeError) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"retry-after": str(exc.retry_after)} if isinstance(exc, Overloaded) else {}
    status = 429 if isinstance(exc, Overloaded) else exc.status
    code = exc.code or ("rate_limit_exceeded" if status == 429 else None)
    return status, error_body(status, exc.message, exc.param, code), headers


# ---- request schemas --------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we ignore; known unsupported ones are checked


class ContentPart(_Wire):
    type: str
    text: str | None = None


class ChatMessage(_Wire):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Wire):
    include_usage: bool = False


class _Generation(_Wire):
    model: str = Field(min_length=1)
    max_tokens: StrictInt | None = Field(None, ge=1)  # strict: true or "8" is not a token count
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)  # llama-server's extension
    repeat_penalty: float | None = Field(None, gt=0, le=10)  # llama-server's extension
    dry_multiplier: float | None = Field(None, ge=0, le=10)  # llama-server's extension (0 = off)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    n: int | None = Field(None, ge=1)
    logprobs: bool | int | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list) and len(v) > 4:
            raise ValueError("at most 4 stop sequences")
        return v

    def _common(self) -> dict[str, Any]:
        if self.n not in (None, 1):
            raise BadRequest("n > 1 is not supported by the local model; send one request per choice", param="n")
        if self.logprobs:
            raise BadRequest("logprobs are not supported", param="logprobs")
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return dict(
            model=self.model,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            dry_multiplier=self.dry_multiplier,
            seed=self.seed,
            stop=stop,
            stream=self.stream,
        )


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None

    def constraint(self) -> Constraint | None:
        """response_format json_object / json_schema, or a forced tool call (tool_choice required or named)."""
        fmt = (self.response_format or {}).get("type")
        if self.tools and self.tool_choice not in (None, "auto", "none"):
            tools = tuple(_tool(t, i) for i, t in enumerate(self.tools))
            if isinstance(self.tool_choice, dict):
                name = (self.tool_choice.get("function") or {}).get("name")
                tools = tuple(t for t in tools if t.name == name)
                if not tools:
                    raise BadRequest(f"tool_choice names '{name}', which is not among the tools", param="tool_choice")
            elif self.tool_choice != "required":
                raise BadRequest("tool_choice must be none, auto, required or a named function", param="tool_choice")
            return Constraint("tool", tools=tools)
        if fmt in (None, "text"):
            return None
        if fmt == "json_object":
            return Constraint("json")
        if fmt == "json_schema":
            spec = (self.response_format or {}).get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise BadRequest("response_format.json_schema must be an object with a schema", param="response_format")
            return Constraint("json", schema=spec.get("schema") or {"type": "object"})
        raise BadRequest(f"response_format type '{fmt}' is not supported", param="response_format")

    def offered(self) -> tuple[Tool, ...]:
        """Tools the model may call or not (tool_choice auto, or absent with tools): non-function tools are
        accepted and not offered."""
        if not self.tools or self.tool_choice not in (None, "auto"):
            return ()
        return tuple(_tool(t, i) for i, t in enumerate(self.tools) if t.get("type", "function") == "function")

    def to_request(self, cache: CacheControl, tenant: str) -> Request:
        constraint = self.constraint()
        system, turns = [], []
        for i, m in enumerate(self.messages):
            text = _text(m, i)
            if m.role in ("system", "developer"):
                system.append(text)
            elif m.role == "assistant":
                turns.append(Message("assistant", text, tool_calls=tuple(_call(c, i) for c in m.tool_calls or [])))
            elif m.role in ("tool", "function"):
                turns.append(Message("tool", text, tool_call_id=m.tool_call_id or ""))
            else:
                turns.append(Message("user", text))
        turns = merge_turns(turns)
        if not turns or turns[-1].role not in ("user", "tool"):
            raise BadRequest("the last message must be from the user or a tool", param="messages")
        if turns[-1].role == "user" and not turns[-1].content.strip():
            raise BadRequest("the last user message is empty", param="messages")
        fields = {"tools": self.tools, "tool_choice": self.tool_choice, "response_format": self.response_format}
        params = {k: v for k, v in fields.items() if v and v != {"type": "text"}}
        return Request(
            kind="chat",
            constraint=constraint,
            tools=self.offered() if constraint is None else (),
            system="\n\n".join(system),
            messages=tuple(turns),
            max_tokens=self.max_completion_tokens or self.max_tokens,
            answer_params=params,
            tenant=tenant,
            cache=cache,
            **self._common(),
        )


class CompletionRequest(_Generation):
    prompt: str | list[str]
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def prompts(self) -> list[str]:
        prompts = [self.prompt] if isinstance(self.prompt, str) else self.prompt
        if not prompts or any(not p for p in prompts):
            raise BadRequest("prompt must be a non-empty string or list of non-empty strings", param="prompt")
        if self.echo or self.suffix or (self.best_of or 1) > 1:
            raise BadRequest("echo, suffix and best_of are not supported", param="echo")
        if len(prompts) > 1 and self.stream:
            raise BadRequest("streaming takes a single prompt", param="prompt")
        return prompts

    def to_request(self, prompt: str, cache: CacheControl, tenant: str) -> Request:
        return Request(kind="completion", prompt=prompt, max_tokens=self.max_tokens, tenant=tenant, cache=cache, **self._common())


class EmbeddingRequest(_Wire):
    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None

    def texts(self) -> list[str]:
        texts = [self.input] if isinstance(self.input, str) else self.input
        if any(not t for t in texts):
            raise BadRequest("input must not contain empty strings", param="input")
        return texts


def _tool(t: dict[str, Any], i: int) -> Tool:
    fn = t.get("function") if t.get("type", "function") == "function" else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
        raise BadRequest(f"tools[{i}] must be a function with a name", param=f"tools.{i}")
    params = fn.get("parameters") or {"type": "object", "properties": {}}
    if not isinstance(params, dict):
        raise BadRequest(f"tools[{i}].function.parameters must be a JSON schema object", param=f"tools.{i}")
    return Tool(fn["name"], str(fn.get("description") or ""), params)


def _call(c: dict[str, Any], i: int) -> ToolCall:
    """An assistant turn's call from the history; its arguments are kept as the JSON text they came as."""
    fn = c.get("function") if isinstance(c, dict) else None
    if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
        raise BadRequest(f"messages[{i}].tool_calls: each call needs a function with a name", param=f"messages.{i}.tool_calls")
    args = fn.get("arguments")
    return ToolCall(str(c.get("id") or ""), fn["name"], args if isinstance(args, str) else json.dumps(args or {}))


def _text(m: ChatMessage, i: int) -> str:
    if m.content is None:
        if m.role == "assistant" and m.tool_calls:
            return ""
        raise BadRequest(f"messages[{i}].content is required", param=f"messages.{i}.content")
    if isinstance(m.content, str):
        return m.content
    parts = []
    for part in m.content:
        if part.type not in ("text", "input_text"):
            raise BadRequest(
                f"content part type '{part.type}' is not supported by the local model", param=f"messages.{i}.content"
            )
        parts.append(part.text or "")
    return "\n".join(parts)


# ---- responses ----------------------------------------------------------------------------------


def _usage(f: Final) -> dict[str, int]:
    return {
        "prompt_tokens": f.prompt_tokens,
        "completion_tokens": f.completion_tokens,
        "total_tokens": f.prompt_tokens + f.completion_tokens,
    }


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def _tool_calls(final: Final) -> list[dict[str, Any]]:
    return [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}} for c in final.tool_calls]


def chat_response(model: str, final: Final) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": final.text, "refusal": None}
    if final.tool_calls:
        message = {"role": "assistant", "content": final.text or None, "refusal": None, "tool_calls": _tool_calls(final)}
    return {
        "id": new_id("chatcmpl"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": final.finish_reason,
            }
        ],
        "usage": _usage(final),
        "system_fingerprint": "edge-ai",
    }


def completion_response(model: str, finals: list[Final]) -> dict[str, Any]:
    total = Final("", "stop", sum(f.prompt_tokens for f in finals), sum(f.completion_tokens for f in finals))
    return {
        "id": new_id("cmpl"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": i, "text": f.text, "logprobs": None, "finish_reason": f.finish_reason} for i, f in enumerate(finals)
        ],
        "usage": _usage(total),
    }


async def chat_stream(model: str, events: AsyncIterator[str | Final], include_usage: bool) -> AsyncIterator[str]:
    base = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        body = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        return _sse(body)

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        if isinstance(event, Final):
            if event.tool_calls:
                yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(_tool_calls(event))]})
            yield chunk({}, event.finish_reason)
            if include_usage:
                yield _sse({**base, "choices": [], "usage": _usage(event)})
        elif event:
            yield chunk({"content": event})
    yield "data: [DONE]\n\n"


async def completion_stream(model: str, events: AsyncIterator[str | Final], include_usage: bool) -> AsyncIterator[str]:
    base = {"id": new_id("cmpl"), "object": "text_completion", "created": int(time.time()), "model": model}
    async for event in events:
        if isinstance(event, Final):
            yield _sse({**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": event.finish_reason}]})
            if include_usage:
                yield _sse({**base, "choices": [], "usage": _usage(event)})
        elif event:
            yield _sse({**base, "choices": [{"index": 0, "text": event, "logprobs": None, "finish_reason": None}]})
    yield "data: [DONE]\n\n"


def stream_error(exc: EdgeError) -> str:
    _, body, _ = render_error(exc)
    return _sse(body)


def _sse(body: dict[str, Any]) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


# ---- gateway: reading cloud answers -----------------------------------------------------------


def parse_response(body: dict[str, Any]) -> Final | None:
    """A cloud chat completion as a Final for the cache; None when it is not a plain text answer.
    Raises ValueError when the body is not a chat completion at all."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0].get("message"), dict):
        raise ValueError("not a chat completion")
    msg, finish = choices[0]["message"], choices[0].get("finish_reason")
    if msg.get("tool_calls") or not isinstance(msg.get("content"), str) or finish not in ("stop", "length"):
        return None
    usage = body.get("usage") or {}
    return Final(msg["content"], finish, int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))


class RelayState:
    """Follows a relayed cloud stream, so that if it breaks the answer can be finished locally."""

    def __init__(self) -> None:
        self.text = ""
        self.id = new_id("chatcmpl")
        self.model = ""
        self.created = int(time.time())
        self.finish: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.tool_use = False
        self.done = False

    def observe(self, event: str, data: str) -> None:
        if data == "[DONE]":
            self.done = True
            return
        body = json.loads(data)
        if "error" in body:
            raise ValueError(f"error event: {body['error']}")
        self.id, self.model, self.created = body.get("id", self.id), body.get("model", self.model), body.get("created", self.created)
        for choice in body.get("choices") or []:
            delta = choice.get("delta") or {}
            self.text += delta.get("content") or ""
            self.tool_use |= bool(delta.get("tool_calls"))
            self.finish = choice.get("finish_reason") or self.finish
        if body.get("usage"):
            self.prompt_tokens = int(body["usage"].get("prompt_tokens", 0))
            self.completion_tokens = int(body["usage"].get("completion_tokens", 0))

    def final(self) -> Final | None:
        if not self.done or self.tool_use or self.finish not in ("stop", "length"):
            return None
        return Final(self.text, self.finish, self.prompt_tokens, self.completion_tokens)

    async def finish_with(self, model: str, events: AsyncIterator[str | Final]) -> AsyncIterator[str]:
        """The rest of a broken stream, well formed: more content chunks, one finish chunk, [DONE]."""
        if self.finish is None:
            base = {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model or model}
            async for event in events:
                finish = event.finish_reason if isinstance(event, Final) else None
                delta = {} if isinstance(event, Final) else {"content": event}
                if finish or event:
                    yield _sse({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})
        yield "data: [DONE]\n\n"
