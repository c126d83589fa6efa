"""HTTP plumbing: reading a bounded JSON body however it arrives."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request as HttpRequest

from edge_ai.errors import BadRequest, PayloadTooLarge
from edge_ai.server.http import read_json_raw


def _request(chunks: list[bytes], declared: int | None = None) -> HttpRequest:
    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0)

    return HttpRequest({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)


def read(chunks: list[bytes], max_bytes: int = 1000, declared: int | None = None) -> tuple[bytes, dict]:
    return asyncio.run(read_json_raw(_request(chunks, declared), max_bytes))


def test_a_body_in_one_chunk_or_many_reads_the_same():
    whole = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}'
    assert read([whole]) == (whole, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    raw, data = read([whole[:10], whole[10:30], b"", whole[30:]])
    assert raw == whole and data["messages"][0]["content"] == "hi"


def test_bodies_over_the_limit_or_not_json_objects_are_refused():
    with pytest.raises(PayloadTooLarge):
        read([b'{"a": "' + b"x" * 600, b"x" * 600 + b'"}'])  # no length declared: counted as it arrives
    with pytest.raises(PayloadTooLarge):
        read([b"{}"], declared=5000)  # declared too large: refused before reading
    with pytest.raises(BadRequest, match="not valid JSON"):
        read([b'{"a": '])
    with pytest.raises(BadRequest, match="JSON object"):
        read([b"[1, 2]"])
