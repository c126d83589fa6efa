"""The ASGI app: loads the engines in the background, serves health, readiness and the dialects."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
from contextlib import asynccontextmanager
from typing import AsyncIterator

from starlette.requests import Request as HttpRequest
from starlette.responses import Response
from starlette.routing import Route

from edge_ai.cache import SemanticCache
from edge_ai.config import Settings
from edge_ai.dialects import anthropic as an
from edge_ai.dialects import openai as oa
from edge_ai.engines.embedder import Embedder
from edge_ai.errors import EdgeError
from edge_ai.gateway import Gateway
from edge_ai.http import JSONResponse
from edge_ai.local_models import LocalModels
from edge_ai.model_files import open_embedder, open_judge
from edge_ai.policy import AnswerPolicy
from edge_ai.router import Router

log = logging.getLogger("edge_ai")


class NotReady(EdgeError):
    status = 503
    kind = "not_ready"


class Runtime:
    """Everything the routes need, built once. Loading runs in a thread so /healthz answers at once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: Embedder | None = None
        self.models: LocalModels | None = None
        self.cache: SemanticCache | None = None
        self.policy: AnswerPolicy | None = None
        self.gateway: Gateway | None = None
        self.error: str | None = None
        self.loaded = threading.Event()

    def load(self) -> None:
        s = self.settings
        try:
            self.embedder = open_embedder(s)
            self.cache = SemanticCache.open(s.cache_dir, self.embedder, open_judge(s), s.cache_threshold, s.cache_ttl)
            self.models = LocalModels(s)
            self.policy = AnswerPolicy(self.cache, self.models, s.default_max_tokens)
            if s.upstreams:
                self.gateway = Gateway(s, self.policy, self.cache)
            # The models, tokenizers and index are ~500k long-lived objects; every full collection walked
            # them all, pausing the requests in flight (BENCHMARKS.md: an exact hit's cost).
            gc.collect()
            gc.freeze()
            log.info("edge-ai ready: model %s, cache %s", self.models.default.engine.path, s.cache_dir)
        except Exception as exc:
            log.exception("loading failed")
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.loaded.set()

    @property
    def ready(self) -> bool:
        return self.policy is not None

    def require(self) -> AnswerPolicy:
        if self.policy is None:
            raise NotReady(self.error or "edge-ai is still loading its models; retry shortly")
        return self.policy

    def status(self) -> dict[str, object]:
        body: dict[str, object] = {"status": "ready" if self.ready else ("failed" if self.error else "loading")}
        if self.error:
            body["error"] = self.error
        if self.models is not None:
            body["models"] = {m.name: m.engine.load() for m in self.models.all()}
        if self.embedder is not None:
            body["embedder"] = self.embedder.stats()
        if self.cache is not None:
            body["cache"] = self.cache.stats()
        if self.gateway is not None:
            body["upstreams"] = self.gateway.status()
            body["gateway"] = self.gateway.counts
        return body

    def close(self) -> None:
        if self.models is not None:
            self.models.close()
        if self.embedder is not None:
            self.embedder.close()
        if self.cache is not None:
            self.cache.close()


def create_app(settings: Settings) -> Router:
    """Plain ASGI routing (edge_ai/router.py): FastAPI's dependency injection and middleware stack cost
    about a millisecond a request, Starlette's application ~30 µs; every body is validated by the
    dialect schemas anyway."""
    from edge_ai import routes

    runtime = Runtime(settings)

    @asynccontextmanager
    async def lifespan(app: Router) -> AsyncIterator[None]:
        loader = asyncio.get_running_loop().run_in_executor(None, runtime.load)
        yield
        await loader
        if runtime.gateway is not None:
            await runtime.gateway.close()
        runtime.close()

    async def healthz(http: HttpRequest) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(http: HttpRequest) -> Response:
        return JSONResponse(runtime.status(), status_code=200 if runtime.ready else 503)

    def http_error(http: HttpRequest, status: int, detail: str) -> Response:
        """Unknown paths, wrong methods and bugs still answer in the API's error envelope."""
        message = f"{http.method} {http.url.path}: {detail}"
        anthropic = http.url.path.startswith("/v1/messages")
        body = an.error_body(status, message) if anthropic else oa.error_body(status, message)
        return JSONResponse(body, status_code=status)

    app = Router([Route("/healthz", healthz), Route("/readyz", readyz), *routes.routes(runtime)], http_error, lifespan)
    app.state.runtime = runtime
    return app
