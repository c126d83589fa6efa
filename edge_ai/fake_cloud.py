"""A fake cloud for tests and drills: a real HTTP/1.1 server on loopback speaking the Anthropic Messages
and OpenAI chat-completions wire formats (streaming included), switchable at run time to fail the way
real outages fail. Written on raw asyncio streams so it can also misbehave at the TCP level.

Modes (`FakeCloud.set(mode, ...)`):
  healthy            answers "Cloud answer: <last user text>"
  status             HTTP `code` (500, 502, 503, 504, 529, 429…) with the dialect's error body and `retry_after`
  slow               waits `delay` seconds before the response headers
  reset              resets the TCP connection without a response
  cut                streams `cut_after` events, then resets the connection
  garbage            200 with a body that is not the dialect's JSON (a bad event when streaming)
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Mode:
    name: str = "healthy"
    code: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    cut_after: int = 3
    event_delay: float = 0.002
    times: int | None = None  # fail this many requests, then be healthy again


@dataclass
class Stats:
    requests: int = 0
    by_mode: dict[str, int] = field(default_factory=dict)


class FakeCloud:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.mode = Mode()
        self.stats = Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def set(self, name: str, **kw: Any) -> None:
        self.mode = Mode(name, **kw)

    def start(self) -> "FakeCloud":
        threading.Thread(target=self._run, name="fake-cloud", daemon=True).start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            self._loop.call_soon_threadsafe(self._shutdown)

    def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._conns):
            w.transport.abort()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()

        async def main() -> None:
            self._server = await asyncio.start_server(self._handle, self.host, self.port)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()
            async with self._server:
                try:
                    await self._server.serve_forever()
                except asyncio.CancelledError:
                    pass

        self._loop.run_until_complete(main())
        self._loop.run_until_complete(_cancel_all())
        self._loop.close()

    # ---- HTTP -------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    k, _, v = h.decode().partition(":")
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._respond(method, path.split("?")[0], body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, asyncio.CancelledError):
            return
        finally:
            self._conns.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _respond(self, method: str, path: str, raw: bytes, w: asyncio.StreamWriter) -> bool:
        dialect = {"/v1/messages": "anthropic", "/v1/chat/completions": "openai", "/v1/responses": "responses"}.get(path)
        if method != "POST" or dialect is None:
            self._send(w, 404, {"error": "not found"})
            return True
        mode = self.mode
        if mode.times is not None:
            mode.times -= 1
            if mode.times <= 0:
                self.mode = Mode(event_delay=mode.event_delay)
        self.stats.requests += 1
        self.stats.by_mode[mode.name] = self.stats.by_mode.get(mode.name, 0) + 1
        req = json.loads(raw or b"{}")
        stream = bool(req.get("stream"))
        if mode.name == "slow":
            await asyncio.sleep(mode.delay)
        if mode.name == "reset":
            _reset(w)
            return False
        if mode.name == "status":
            headers = {"retry-after": str(mode.retry_after)} if mode.retry_after is not None else {}
            self._send(w, mode.code, _error(dialect, mode.code), headers)
            return True
        if mode.name == "garbage" and not stream:
            self._send_raw(w, 200, b"<html>502 Bad Gateway</html>", "application/json")
            return True
        text = "Cloud answer: " + _last_user_text(req)
        if not stream:
            self._send(w, 200, _message(dialect, req, text))
            return True
        await self._stream(w, dialect, req, text, mode)
        return mode.name not in ("cut",)

    async def _stream(self, w: asyncio.StreamWriter, dialect: str, req: dict[str, Any], text: str, mode: Mode) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        events = _events(dialect, req, text)
        if mode.name == "garbage":
            events = events[:2] + ["data: {this is not json\n\n"]
        for i, ev in enumerate(events):
            if mode.name == "cut" and i == mode.cut_after:
                await w.drain()
                _reset(w)
                return
            data = ev.encode()
            w.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            await w.drain()
            await asyncio.sleep(mode.event_delay)
        w.write(b"0\r\n\r\n")
        await w.drain()

    def _send(self, w: asyncio.StreamWriter, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self._send_raw(w, status, json.dumps(body).encode(), "application/json", headers)

    def _send_raw(self, w: asyncio.StreamWriter, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        w.write(f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {len(body)}\r\n{extra}\r\n".encode() + body)


async def _cancel_all() -> None:
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _reset(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    if sock is not None:  # linger 0: close() sends RST, like a crashed load balancer
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


def _last_user_text(req: dict[str, Any]) -> str:
    if "input" in req:  # Responses: a string, or items
        if isinstance(req["input"], str):
            return req["input"]
        for item in reversed(req["input"]):
            if item.get("role") == "user":
                c = item.get("content")
                return c if isinstance(c, str) else " ".join(p.get("text", "") for p in c if isinstance(p, dict))
        return ""
    for m in reversed(req.get("messages") or []):
        if m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            return " ".join(b.get("text", "") for b in c if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _error(dialect: str, code: int) -> dict[str, Any]:
    kinds = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}
    if dialect == "anthropic":
        return {"type": "error", "error": {"type": kinds.get(code, "api_error"), "message": f"fake cloud {code}"}}
    return {"error": {"message": f"fake cloud {code}", "type": "server_error", "param": None, "code": None}}


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def _response(req: dict[str, Any], text: str, status: str = "completed") -> dict[str, Any]:
    item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:20]}", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}
    return {"id": f"resp_{uuid.uuid4().hex[:20]}", "object": "response", "created_at": int(time.time()), "status": status,
            "model": req.get("model"), "output": [item] if status == "completed" else [], "error": None, "incomplete_details": None,
            "usage": {"input_tokens": 10, "output_tokens": len(_words(text)), "total_tokens": 10 + len(_words(text))}}


def _message(dialect: str, req: dict[str, Any], text: str) -> dict[str, Any]:
    if dialect == "responses":
        return _response(req, text)
    n_in, n_out = 10, len(_words(text))
    if dialect == "anthropic":
        return {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": req.get("model"),
                "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": n_in, "output_tokens": n_out}}
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "object": "chat.completion", "created": int(time.time()), "model": req.get("model"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}}


def _events(dialect: str, req: dict[str, Any], text: str) -> list[str]:
    words = _words(text)
    if dialect == "responses":
        done = _response(req, text)
        item = done["output"][0]
        seq = iter(range(1000))

        def rev(kind: str, body: dict[str, Any]) -> str:
            return f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': next(seq), **body})}\n\n"
        started = {**done, "status": "in_progress", "output": [], "usage": None}
        ref = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        return [
            rev("response.created", {"response": started}),
            rev("response.output_item.added", {"output_index": 0, "item": {**item, "status": "in_progress", "content": []}}),
            rev("response.content_part.added", {**ref, "part": {"type": "output_text", "text": "", "annotations": []}}),
            *[rev("response.output_text.delta", {**ref, "delta": w}) for w in words],
            rev("response.output_text.done", {**ref, "text": text}),
            rev("response.content_part.done", {**ref, "part": item["content"][0]}),
            rev("response.output_item.done", {"output_index": 0, "item": item}),
            rev("response.completed", {"response": done}),
        ]
    if dialect == "anthropic":
        def ev(name: str, body: dict[str, Any]) -> str:
            return f"event: {name}\ndata: {json.dumps(body)}\n\n"
        msg = {"id": f"msg_{uuid.uuid4().hex[:20]}", "type": "message", "role": "assistant", "model": req.get("model"), "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}
        return [
            ev("message_start", {"type": "message_start", "message": msg}),
            ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ev("ping", {"type": "ping"}),
            *[ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words],
            ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
            ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": len(words)}}),
            ev("message_stop", {"type": "message_stop"}),
        ]
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:20]}", "object": "chat.completion.chunk", "created": int(time.time()), "model": req.get("model")}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"
    return [chunk({"role": "assistant", "content": ""}), *[chunk({"content": w}) for w in words], chunk({}, "stop"), "data: [DONE]\n\n"]
