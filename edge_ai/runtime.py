"""The engines a server or a command needs, built once: embedder, cache, local models, answer policy,
gateway. Loading runs in a thread so the server answers /healthz at once."""

from __future__ import annotations

import gc
import logging
import threading
import time

from edge_ai.cache import SemanticCache
from edge_ai.config import Settings
from edge_ai.engines.embedder import Embedder
from edge_ai.engines.pool import Pool
from edge_ai.engines.store import open_store
from edge_ai.errors import EdgeError
from edge_ai.gateway import Gateway
from edge_ai.local_models import LocalModels
from edge_ai.model_files import open_embedder, open_judge
from edge_ai.policy import AnswerPolicy

log = logging.getLogger("edge_ai")


class NotReady(EdgeError):
    status = 503
    kind = "not_ready"


class Runtime:
    """Everything the routes need, built once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedder: Embedder | None = None
        self.models: LocalModels | None = None
        self.cache: SemanticCache | None = None
        self.policy: AnswerPolicy | None = None
        self.gateway: Gateway | None = None
        self.pool: Pool | None = None
        self.error: str | None = None
        self.loaded = threading.Event()
        self.started = time.monotonic()

    def load(self) -> None:
        s = self.settings
        try:
            self.embedder = open_embedder(s)
            self.cache = SemanticCache.open(open_store(s), self.embedder, open_judge(s), s.cache_threshold,
                                            lexical_first=s.lexical_first)
            self.models = LocalModels(s, self.embedder.turns if s.cpu_turns else None)
            self.pool = Pool(s.backends, s.breaker_failures, s.breaker_cooldown, s.backend_health_interval) if s.backends else None
            self.policy = AnswerPolicy(self.cache, self.models, s.default_max_tokens, self.pool)
            if s.upstreams:
                self.gateway = Gateway(s, self.policy, self.cache)
            # The models, tokenizers and index are ~500k long-lived objects; every full collection walked
            # them all, pausing the requests in flight (BENCHMARKS.md: an exact hit's cost).
            gc.collect()
            gc.freeze()
            log.info("edge-ai ready: model %s, cache %s", self.models.default.engine.path, self.cache.store.where)
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
        if self.pool is not None:
            body["backends"] = self.pool.status()
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
