"""HTTP plumbing shared by the routes: bounded body reading, disconnect watching."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, TypeVar

import orjson
from starlette.requests import ClientDisconnect, Request as HttpRequest
from starlette.responses import JSONResponse as _StarletteJSON

from edge_ai.errors import BadRequest, PayloadTooLarge, RequestTimeout

T = TypeVar("T")


class JSONResponse(_StarletteJSON):
    """orjson renders several times faster than the standard library; answers are on the hot path."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)


async def read_json(request: HttpRequest, max_bytes: int, timeout: float = 30.0) -> dict[str, Any]:
    return (await read_json_raw(request, max_bytes, timeout))[1]


async def read_json_raw(request: HttpRequest, max_bytes: int, timeout: float = 30.0) -> tuple[bytes, dict[str, Any]]:
    """The body as received (forwarded as is in gateway mode) and parsed. A client that stops sending
    halfway is answered 408 after `timeout` seconds, rather than holding its connection and task forever."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise PayloadTooLarge(f"request body is larger than {max_bytes} bytes")
                if chunk:  # the stream ends with an empty chunk
                    chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise ClientGone() from None  # left halfway through its body: nobody to answer
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # a small body comes whole: no copy
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    return body, data


class ClientGone(Exception):
    """The client closed the connection; its work was cancelled."""


async def until_disconnect(request: HttpRequest, work: Awaitable[T], poll_s: float = 0.25) -> T:
    """Await `work`, cancelling it if the client disconnects first (frees the model slot at once)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()
