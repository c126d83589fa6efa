"""OpenAI-compatible routes: parse the wire body, ask the answer policy, render the reply."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import TYPE_CHECKING, Any, AsyncIterator

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request as HttpRequest

from edge_ai.dialects import openai as oa
from edge_ai.errors import BadRequest, EdgeError
from edge_ai.http import ClientGone, parse, read_json, until_disconnect
from edge_ai.request import CacheControl, Final, Reply

if TYPE_CHECKING:
    from edge_ai.app import Runtime


def _error(exc: EdgeError) -> JSONResponse:
    status, body, headers = oa.render_error(exc)
    return JSONResponse(body, status_code=status, headers=headers)


async def _guard_stream(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """Errors after the first byte can only be reported in-band, as an error event."""
    try:
        async for chunk in chunks:
            yield chunk
    except EdgeError as exc:
        yield oa.stream_error(exc)


def router(runtime: "Runtime") -> APIRouter:
    r = APIRouter()
    max_body = runtime.settings.max_body_bytes

    def client_opts(http: HttpRequest) -> tuple[CacheControl, str]:
        return CacheControl.from_header(http.headers.get("x-edge-cache")), http.headers.get("x-edge-tenant", "")

    @r.get("/v1/models")
    async def list_models() -> Response:
        try:
            policy = runtime.require()
        except EdgeError as exc:
            return _error(exc)
        now = int(time.time())
        data = [{"id": n, "object": "model", "created": now, "owned_by": "edge-ai"} for n in policy.models.names()]
        return JSONResponse({"object": "list", "data": data})

    @r.post("/v1/chat/completions")
    async def chat_completions(http: HttpRequest) -> Response:
        try:
            policy = runtime.require()
            body = parse(oa.ChatCompletionRequest, await read_json(http, max_body))
            req = body.to_request(*client_opts(http))
            reply = await policy.answer(req)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            if body.stream:
                chunks = _guard_stream(oa.chat_stream(body.model, reply.events, include_usage))
                return StreamingResponse(chunks, media_type="text/event-stream", headers=reply.response_headers())
            final = await until_disconnect(http, reply.collect())
            return JSONResponse(oa.chat_response(body.model, final), headers=reply.response_headers())
        except EdgeError as exc:
            return _error(exc)
        except ClientGone:
            return Response(status_code=499)

    @r.post("/v1/completions")
    async def completions(http: HttpRequest) -> Response:
        try:
            policy = runtime.require()
            body = parse(oa.CompletionRequest, await read_json(http, max_body))
            cache, tenant = client_opts(http)
            replies: list[Reply] = []
            try:
                for prompt in body.prompts():
                    replies.append(await policy.answer(body.to_request(prompt, cache, tenant)))
            except EdgeError:
                for done in replies:  # one prompt refused: free the others' slots too
                    done.cancel()
                raise
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            if body.stream:
                chunks = _guard_stream(oa.completion_stream(body.model, replies[0].events, include_usage))
                return StreamingResponse(chunks, media_type="text/event-stream", headers=replies[0].response_headers())
            finals: list[Final] = await until_disconnect(http, asyncio.gather(*(r.collect() for r in replies)))
            headers = replies[0].response_headers() if len(replies) == 1 else {"x-edge-source": ",".join(r.source for r in replies)}
            return JSONResponse(oa.completion_response(body.model, finals), headers=headers)
        except EdgeError as exc:
            return _error(exc)
        except ClientGone:
            return Response(status_code=499)

    @r.post("/v1/embeddings")
    async def embeddings(http: HttpRequest) -> Response:
        try:
            runtime.require()
            assert runtime.embedder is not None
            body = parse(oa.EmbeddingRequest, await read_json(http, max_body))
            texts = body.texts()
            if body.dimensions not in (None, runtime.embedder.dim):
                raise BadRequest(f"this embedder makes {runtime.embedder.dim}-dimensional vectors", param="dimensions")
            vectors = await runtime.embedder.embed(texts)
            n_tokens = runtime.embedder.count_tokens(texts)
        except EdgeError as exc:
            return _error(exc)
        data = [
            {"object": "embedding", "index": i, "embedding": _encode_vector(v, body.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": n_tokens, "total_tokens": n_tokens}
        return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": usage})

    return r


def _encode_vector(v: np.ndarray, fmt: str) -> Any:
    if fmt == "base64":
        return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()
    return v.tolist()
