"""HTTP routes of both dialects. Each route: parse the wire body into the internal Request, ask the one
answer policy, render the Reply in the dialect it came in. Errors leave in that dialect's envelope.

The routes take the raw request and return a response: FastAPI publishes their bodies' schemas
(`openapi_extra`) but does not validate them a second time; the dialect schemas do, once."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable, Protocol, TypeVar

import numpy as np
from fastapi import APIRouter
from starlette.requests import Request as HttpRequest
from starlette.responses import Response, StreamingResponse

from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.dialects import responses as rs
from edge_ai.dialects.validate import parse
from edge_ai.errors import BadRequest, EdgeError, NotFound
from edge_ai.request import CacheControl, Final, Reply, Request
from edge_ai.server.auth import OPEN, Principal
from edge_ai.server.http import ClientGone, JSONResponse, read_json, read_json_raw, until_disconnect
from edge_ai.server.openapi import document

if TYPE_CHECKING:
    from edge_ai.runtime import Runtime


log = logging.getLogger("edge_ai.routes")
B = TypeVar("B")


class Dialect(Protocol):
    def render_error(self, exc: EdgeError) -> tuple[int, dict[str, Any], dict[str, str]]: ...

    def stream_error(self, exc: EdgeError) -> str: ...


async def _guarded(dialect: Dialect, work: Callable[[], Awaitable[Response]]) -> Response:
    try:
        return await work()
    except EdgeError as exc:
        status, body, headers = dialect.render_error(exc)
        return JSONResponse(body, status_code=status, headers=headers)
    except ClientGone:
        return Response(status_code=499)  # nobody is listening; the work was cancelled
    except Exception:  # a bug: still an answer in the client's own envelope, and a trace in the log
        log.exception("unexpected error")
        status, body, headers = dialect.render_error(EdgeError("internal error in edge-ai; see its log"))
        return JSONResponse(body, status_code=status, headers=headers)


async def _in_band_errors(dialect: Dialect, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    """After the first byte an error can only be reported inside the stream."""
    try:
        async for chunk in chunks:
            yield chunk
    except EdgeError as exc:
        yield dialect.stream_error(exc)


async def _respond(
    http: HttpRequest,
    dialect: Dialect,
    reply: Reply,
    stream: AsyncIterator[str] | None,
    render: Callable[[Final], dict[str, Any]],
) -> Response:
    """A stream goes out as it is made; otherwise the answer is collected (and cancelled if the client leaves)."""
    if stream is not None:
        body = _in_band_errors(dialect, stream)
        if reply.source == "cache":
            # Complete already: its events go out in one write. A streamed response costs the event loop a
            # task group, a disconnect watcher and a send per event; in a surge a third of the hits stream.
            events = "".join([chunk async for chunk in body])
            return Response(events, media_type="text/event-stream", headers=reply.response_headers())
        return StreamingResponse(body, media_type="text/event-stream", headers=reply.response_headers())
    if reply.source == "cache":  # already complete: nothing to cancel if the client leaves
        final = await reply.collect()
    else:
        final = await until_disconnect(http, reply.collect())
    return JSONResponse(render(final), headers=reply.response_headers())


def principal(http: HttpRequest) -> Principal:
    """Who is asking, as the gatekeeper middleware identified them."""
    state = http.scope.get("state")
    return state.get("principal", OPEN) if state else OPEN


def note(http: HttpRequest, **facts: Any) -> None:
    """Facts about the answer for the middleware's metrics and log (model, tokens)."""
    state = http.scope.get("state")
    if state is not None:
        state.update(facts)


def _client_opts(http: HttpRequest) -> tuple[CacheControl, str]:
    """edge-ai's own headers, in one pass over the raw ones (ASGI servers give the names in lower case):
    three lookups through Starlette's Headers, two of them raising KeyError inside, cost ~8 µs of an exact
    hit's ~120 µs in-process; this ~4.5 µs. The tenant is the key's; `x-edge-tenant` only narrows it."""
    own = {k: v.decode("latin-1") for k, v in http.scope["headers"] if k.startswith(b"x-edge-")}
    cache = CacheControl.from_headers(own.get(b"x-edge-cache"), own.get(b"x-edge-threshold"))
    return cache, principal(http).scoped(own.get(b"x-edge-tenant", ""))


async def _counted(http: HttpRequest, events: AsyncIterator[str | Final], keep_text: bool) -> AsyncIterator[str | Final]:
    """The answer's events as they are, noting the token counts of the final one (and its text, for a
    request log that keeps prompts and answers)."""
    try:
        async for event in events:
            if isinstance(event, Final):
                note(http, prompt_tokens=event.prompt_tokens, completion_tokens=event.completion_tokens,
                     drafted=event.drafted, accepted=event.accepted, call_belief=event.call_belief)
                if keep_text:
                    note(http, answer=event.text)
            yield event
    finally:
        # closed now, not by the GC's finalizer hook (which wakes the loop through its self-pipe)
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()


def router(runtime: "Runtime") -> APIRouter:
    """The dialects' routes. Each reads its body once, through the dialect schema."""
    max_body, body_timeout = runtime.settings.max_body_bytes, runtime.settings.body_timeout
    log_prompts = runtime.settings.log_prompts

    def model_label(name: str) -> str:
        """The local model a client's name maps to: a bounded label (client names are not)."""
        models = runtime.models
        if models is None:
            return "none"
        try:
            return models.get(name).name
        except NotFound:
            return "other"

    async def answer(req: Request) -> Reply:
        return await runtime.require().answer(req)

    async def generate(
        http: HttpRequest, dialect: str, raw: bytes, data: dict[str, Any], build: Callable[[], tuple[B, Request]]
    ) -> Response | tuple[B, Reply]:
        """Cloud first when gateway mode fronts this dialect, else (or on failure) the local answer policy.
        The cloud gets the client's bytes as they came; the internal request is only built when needed
        (a fallback, a mid-stream recovery, or the write-through after the answer went out), so a
        healthy cloud costs no parsing on the response path, and a body only the cloud understands
        still reaches it."""
        policy = runtime.require()
        note(http, model=model_label(str(data.get("model", ""))))
        gateway = runtime.gateway
        if gateway is not None and gateway.serves(dialect):
            result = await gateway.forward(dialect, raw, data, lambda: build()[1], dict(http.headers))
            if isinstance(result, Response):
                return result
            body, req = build()  # a request the local path cannot take gets its 4xx here
            reply = await policy.answer(req)
            reply.headers["x-edge-fallback"] = result.reason
        else:
            body, req = build()
            reply = await policy.answer(req)
        if log_prompts:
            note(http, prompt=req.query)
        reply.events = _counted(http, reply.events, log_prompts)
        return body, reply

    # ---- OpenAI ----------------------------------------------------------------------------

    async def list_models(http: HttpRequest) -> Response:
        async def work() -> Response:
            now = int(time.time())
            names = runtime.require().models.names()
            return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "edge-ai"} for n in names]})

        return await _guarded(oa, work)

    def generating(dialect: str, wire: Any, schema: type, stream_of: Callable[[Any, Reply], AsyncIterator[str]],
                   render: Callable[[Any, Final], dict[str, Any]]) -> Callable[[HttpRequest], Awaitable[Response]]:
        """A route that answers a generation request of one dialect: read the body once, cloud first in
        gateway mode or else the answer policy, render in the dialect (streamed or whole)."""

        async def route(http: HttpRequest) -> Response:
            async def work() -> Response:
                raw, data = await read_json_raw(http, max_body, body_timeout)

                def build() -> tuple[Any, Request]:
                    body = parse(schema, data)
                    return body, body.to_request(*_client_opts(http))

                result = await generate(http, dialect, raw, data, build)
                if isinstance(result, Response):
                    return result
                body, reply = result
                stream = stream_of(body, reply) if body.stream else None
                return await _respond(http, wire, reply, stream, lambda f: render(body, f))

            return await _guarded(wire, work)

        route.__name__ = f"{dialect}_generation"
        return route

    chat_completions = generating(
        "openai", oa, oa.ChatCompletionRequest,
        lambda b, r: oa.chat_stream(b.model, r.events, bool(b.stream_options and b.stream_options.include_usage)),
        lambda b, f: oa.chat_response(b.model, f))
    responses = generating("responses", rs, rs.ResponsesRequest, lambda b, r: rs.response_stream(b, r.events), rs.response_object)
    messages = generating("anthropic", an, an.MessagesRequest, lambda b, r: an.message_stream(b.model, r.events, r.prompt_tokens),
                          lambda b, f: an.message_response(b.model, f))

    async def completions(http: HttpRequest) -> Response:
        async def work() -> Response:
            body = parse(oa.CompletionRequest, await read_json(http, max_body, body_timeout))
            note(http, model=model_label(body.model))
            cache, tenant = _client_opts(http)
            replies: list[Reply] = []
            try:
                for prompt in body.prompts():
                    replies.append(await answer(body.to_request(prompt, cache, tenant)))
            except EdgeError:
                for done in replies:  # one prompt refused: free the others' slots too
                    done.cancel()
                raise
            for r in replies:
                r.events = _counted(http, r.events, log_prompts)
            usage = bool(body.stream_options and body.stream_options.include_usage)
            if body.stream:
                stream = oa.completion_stream(body.model, replies[0].events, usage)
                return await _respond(http, oa, replies[0], stream, lambda f: {})
            finals: list[Final] = await until_disconnect(http, asyncio.gather(*(x.collect() for x in replies)))
            headers = {"x-edge-source": ",".join(x.source for x in replies)}
            if len(replies) == 1:
                headers = replies[0].response_headers()
            return JSONResponse(oa.completion_response(body.model, finals), headers=headers)

        return await _guarded(oa, work)

    async def embeddings(http: HttpRequest) -> Response:
        async def work() -> Response:
            runtime.require()
            embedder = runtime.embedder
            assert embedder is not None
            body = parse(oa.EmbeddingRequest, await read_json(http, max_body, body_timeout))
            texts = body.texts()
            if body.dimensions not in (None, embedder.dim):
                raise BadRequest(f"this embedder makes {embedder.dim}-dimensional vectors", param="dimensions")
            vectors, n = await embedder.embed_counted(texts)
            data = [{"object": "embedding", "index": i, "embedding": _vector(v, body.encoding_format)} for i, v in enumerate(vectors)]
            return JSONResponse({"object": "list", "data": data, "model": body.model, "usage": {"prompt_tokens": n, "total_tokens": n}})

        return await _guarded(oa, work)

    # ---- Anthropic -------------------------------------------------------------------------

    async def count_tokens(http: HttpRequest) -> Response:
        async def work() -> Response:
            body = parse(an.CountTokensRequest, await read_json(http, max_body, body_timeout))
            req = body.to_request(CacheControl(read=False, write=False), "")
            return JSONResponse({"input_tokens": runtime.require().count_tokens(req)})

        return await _guarded(an, work)

    # Plain Starlette routes inside the FastAPI app: FastAPI's per-route request handler (dependency
    # solving, its exit stack) is a third of an exact hit's cost (BENCHMARKS.md); the schema is
    # published all the same (openapi.document).
    api = APIRouter()
    for path, endpoint, method, tag, summary, model in (
        ("/v1/chat/completions", chat_completions, "POST", "OpenAI", "Chat completion", oa.ChatCompletionRequest),
        ("/v1/messages", messages, "POST", "Anthropic", "Create a message", an.MessagesRequest),
        ("/v1/responses", responses, "POST", "OpenAI", "Create a response (Responses API)", rs.ResponsesRequest),
        ("/v1/completions", completions, "POST", "OpenAI", "Text completion", oa.CompletionRequest),
        ("/v1/embeddings", embeddings, "POST", "OpenAI", "Embeddings", oa.EmbeddingRequest),
        ("/v1/messages/count_tokens", count_tokens, "POST", "Anthropic", "Count tokens", an.CountTokensRequest),
        ("/v1/models", list_models, "GET", "OpenAI", "List models", None),
    ):
        api.add_route(path, endpoint, methods=[method], include_in_schema=False)
        document(path, method, tag, summary, model)
    return api


def _vector(v: np.ndarray, fmt: str) -> Any:
    if fmt == "base64":
        return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()
    return v.tolist()
