"""Settings: defaults < TOML file < environment (EDGE_AI_*) < command-line flags."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

ENV_PREFIX = "EDGE_AI_"
CONFIG_ENV = "EDGE_AI_CONFIG"


class UpstreamConfig(BaseModel):
    """A cloud API that gateway mode forwards to. Requests go only to upstreams of their own dialect."""

    name: str
    dialect: Literal["anthropic", "openai"]
    base_url: str
    api_key: str = Field("", description="sent upstream; empty = pass the client's own key through")
    model_map: dict[str, str] = Field(default_factory=dict, description="client model name -> upstream model name")
    connect_timeout: float = Field(3.0, gt=0)
    first_byte_timeout: float = Field(60.0, gt=0, description="headers, and each later read of a stream")
    total_timeout: float = Field(600.0, gt=0)
    max_retry_after: float = Field(2.0, ge=0, description="a 429 asking to wait longer than this falls back at once")


class BackendConfig(BaseModel):
    """An OpenAI-compatible inference server (llama-server, vLLM, Ollama, another edge-ai) for the local path."""

    model_config = ConfigDict(extra="forbid")

    name: str
    base_url: str = Field(..., description="serves /v1/chat/completions, e.g. http://gpu1:8080")
    api_key: str = Field("", description="sent as Bearer (empty: none)")
    weight: float = Field(1.0, gt=0, description="share of the load: in-flight requests are divided by it")
    model: str = Field("", description="model name sent (empty: the client's)")
    connect_timeout: float = Field(2.0, gt=0)
    first_byte_timeout: float = Field(30.0, gt=0, description="headers, and each later read of a stream")
    total_timeout: float = Field(600.0, gt=0)


class ApiKey(BaseModel):
    """A client key. The tenant comes from the key: it scopes the cache, so keys never see each other's answers."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field("", description="the key itself (the file then holds a secret: keep it private)")
    key_sha256: str = Field("", description="hex sha256 of the key: the file holds no secret")
    tenant: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,64}$", description="whose cache this key reads and writes")
    admin: bool = Field(False, description="may use /admin/..., /metrics and /dashboard")
    metrics: bool = Field(False, description="may read /metrics and /dashboard only")
    requests_per_minute: int | None = Field(None, ge=1, description="429 with Retry-After past this rate")
    max_concurrent: int | None = Field(None, ge=1, description="429 with Retry-After past this many in flight")

    @model_validator(mode="after")
    def _one_key(self) -> "ApiKey":
        if bool(self.key) == bool(self.key_sha256):
            raise ValueError("give exactly one of key and key_sha256")
        if self.key_sha256:
            digest = self.key_sha256.lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ValueError("key_sha256 must be 64 hex digits")
            self.key_sha256 = digest
        return self

    def digest(self) -> bytes:
        return bytes.fromhex(self.key_sha256) if self.key_sha256 else hashlib.sha256(self.key.encode()).digest()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    host: str = "127.0.0.1"
    port: int = 8088

    # Models. Empty path = the packaged default (Qwen2.5-Coder-1.5B-Instruct Q4_K_M / all-MiniLM-L6-v2).
    model: str = Field("", description="GGUF file of the default local model")
    embedder: str = Field("", description="sentence-transformers model directory")
    embedder_backend: Literal["onnx", "torch"] = Field(
        "onnx", description="onnx: the embedder exported once to ONNX Runtime (same vectors, faster); torch: as loaded"
    )
    models_dir: str = Field("models", description="where the packaged GGUF is assembled and the embedder's ONNX export kept")
    model_map: dict[str, str] = Field(
        default_factory=dict, description="client model name -> GGUF path (other names use the default model)"
    )
    strict_models: bool = Field(False, description="404 model_not_found for names not in model_map")

    # Inference core.
    n_slots: int = Field(16, ge=1, le=256, description="sequences decoded together in one forward pass")
    n_ctx_slot: int | None = Field(
        None, ge=256, description="context tokens per slot (prompt + answer); unset = what the model was trained "
        "for, cut to fit kv_budget_mb over all slots"
    )
    kv_budget_mb: int = Field(4096, ge=64, description="memory for the KV cache of all slots together (f16), used "
                              "when n_ctx_slot is unset: SmolLM2 takes 16 slots x 8192 tokens in 3 GiB")
    n_batch: int = Field(512, ge=32, description="most tokens in one forward pass (chunked prefill)")
    n_threads: int = Field(0, ge=0, description="CPU threads for the model (0 = all cores)")
    n_gpu_layers: int = Field(0, ge=-1, description="layers offloaded to the GPU (-1 = all; needs a CUDA build)")
    kv_unified: bool = Field(
        False, description="one KV buffer for all slots: answers no longer batch-invariant (and no faster here)"
    )
    extra_buffers: bool = Field(
        False, description="llama.cpp's AMX / repacked weight layouts: may crash where AMX is reported but not "
        "enabled, and make answers depend on the batch"
    )
    max_queue: int = Field(64, ge=0, description="requests waiting for a slot before 429/529")
    speculate: bool = Field(True, description="speculative decoding: tokens guessed from the context (n-gram "
                            "lookup) decoded with each slot's next one, kept where the model agrees (2.85x on a rewrite "
                            "for one client, 1.48x for four; no loss measured where nothing is copied, BENCHMARKS.md)")
    keep_prefixes: bool = Field(True, description="save the longest prompt prefixes' KV at shutdown (in "
                                "cache_dir/prefixes) and load them at start: an agent's first request after a restart is warm")
    lexical_first: bool = Field(True, description="a question sharing most of its rare words (and all its numbers) "
                                "with a cached prompt of its scope is embedded before the queue's others: in a surge, "
                                "likely hits wait less behind new questions (edge_ai/engines/lexicon.py)")
    cpu_turns: bool = Field(True, description="the embedder's passes go before the model's next CPU decode step "
                            "(a first-time paraphrase is not held up by a saturated model)")
    # CPU priorities (Linux nice, per thread). On a box of its own, decode at +10 and the embedder at +5 keep
    # cache hits fast while the model is saturated (RELIABILITY.md: the surge drill). Off by default: while
    # another process holds a core, a lowered thread pool crawls, each step waiting at its barrier for the
    # thread that gets a tenth of a core (32 tokens: 0.32 s alone, 2.0 s at nice 0, 90 s at +10).
    decode_nice: int = Field(0, ge=0, le=19, description="how much lower than the event loop the model's threads run "
                             "(10 on a dedicated box: hits first; 0 where other processes share the cores)")
    embed_nice: int = Field(0, ge=0, le=19, description="how much lower than the event loop the embedder's threads run "
                            "(5 on a dedicated box)")
    call_least: float = Field(0.5, ge=0.0, le=1.0, description="with tools offered, a call opens (at the answer's or "
                              "a line's start) only where the model's probability of opening one there is at least "
                              "this: 0.5 = more likely than not; 0 = wherever it is the likeliest token")
    check_calls: bool = Field(True, description="before a call answering the user's own turn goes out, ask the "
                              "model apart (no tools in sight) whether general knowledge answers the request; if "
                              "so, ask again without the tools (edge_ai/call_need.py)")
    default_max_tokens: int = Field(512, ge=1, description="answer length when the client sends none")
    compact_tools: Literal["auto", "always", "never"] = Field(
        "auto", description="show an agent's request compact (each tool as name, first sentence and parameters; the "
        "start of the system prompt): auto = when its prompt with tools is over 4,096 tokens or does not fit a slot, "
        "always, or never")

    default_system: str = Field(
        "", description="system prompt for requests that send none (empty = the model's own template default)"
    )

    # Sampling for requests that send none of these (each one separately), chosen by `edge-ai eval answers`
    # on SmolLM2 (BENCHMARKS.md): greedy with a repeat penalty of 1.2 answered best; llama-server's
    # temperature 0.8 loses a fifth of the right answers on a 135M model. The repeat penalty sees 64 tokens;
    # DRY catches the longer loops a 512-token answer falls into (whole paragraphs again). top_k/top_p/min_p
    # apply only to a request that asks for a temperature.
    temperature: float = Field(0.0, ge=0, le=2, description="default sampling temperature (0 = greedy)")
    top_k: int = Field(40, ge=0, description="default top-k (0 = off)")
    top_p: float = Field(0.95, gt=0, le=1, description="default top-p")
    min_p: float = Field(0.05, ge=0, le=1, description="default min-p")
    repeat_penalty: float = Field(1.2, gt=0, le=10, description="default repeat penalty over the last 64 tokens (1 = off)")
    dry_multiplier: float = Field(0.5, ge=0, le=10, description="default DRY penalty on repeating a sequence of the answer (0 = off)")

    # Semantic cache.
    cache_backend: Literal["disk", "redis"] = Field(
        "disk", description="disk: entries in cache_dir (one box); redis: in redis_url, shared by every replica"
    )
    cache_dir: str = Field("cache", description="on-disk cache directory")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="the shared cache's Redis (cache_backend = redis)")
    redis_prefix: str = Field("edge-ai", pattern=r"^[A-Za-z0-9._-]{1,64}$",
                              description="names this cache's keys in Redis (several caches can share one Redis)")
    redis_stream_len: int = Field(100_000, ge=1000, description="changes kept for replicas that fall behind; "
                                  "one further behind rebuilds its index from Redis")
    cache_threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="least semantic-hit score: cosine less the hit model's penalties (unset = the model's default)"
    )
    hit_model: str = Field("", description="hit-decision model JSON (scripts/fit_hit_model.py; unset = built in)")
    cache_ttl: float | None = Field(None, gt=0, description="seconds an entry lives (unset = forever)")

    # Gateway mode: forward to these clouds (in priority order), fall back locally when they fail.
    upstreams: list[UpstreamConfig] = Field(default_factory=list, description="cloud APIs to front")
    breaker_failures: int = Field(3, ge=1, description="consecutive failures that open an upstream's breaker")
    breaker_cooldown: float = Field(30.0, gt=0, description="seconds an open breaker waits before a probe")

    # A pool of inference servers answering the local path before the in-process model.
    backends: list[BackendConfig] = Field(default_factory=list, description="inference servers ([[backends]])")
    backend_health_interval: float = Field(5.0, gt=0, description="seconds between health checks of each backend")

    # HTTP.
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="largest accepted request body")
    body_timeout: float = Field(30.0, gt=0, description="seconds a request body may take to arrive (then 408)")

    # Keys and tenants. No keys = open, as the embedded default on 127.0.0.1 is.
    api_keys: list[ApiKey] = Field(default_factory=list, description="client keys ([[api_keys]] in TOML)")
    passthrough_tenancy: Literal["per_key", "shared"] = Field(
        "per_key", description="gateway mode passing the client's own cloud key through: per_key = each key is its "
        "own tenant (from a hash; the key is never stored), shared = one cache across the site's keys"
    )

    # Logs.
    log_format: Literal["text", "json"] = Field("text", description="json: one object per request and event")
    log_prompts: bool = Field(False, description="put prompts and answers in the request log")

    @model_validator(mode="after")
    def _keys_and_passthrough(self) -> "Settings":
        if self.api_keys:
            passing = [u.name for u in self.upstreams if not u.api_key]
            if passing:
                raise ValueError(
                    f"upstream {', '.join(passing)} passes the client's key through, but api_keys are configured, so "
                    "clients send edge-ai keys: give the upstream its own api_key"
                )
            digests = [k.digest() for k in self.api_keys]
            if len(set(digests)) != len(digests):
                raise ValueError("two api_keys entries hold the same key")
        return self

    def passes_keys_through(self) -> bool:
        return any(not u.api_key for u in self.upstreams)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = os.environ.get(CONFIG_ENV)
        if toml:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml)))
        return tuple(sources)

    @classmethod
    def load(cls, config_file: str | Path | None = None, **overrides: Any) -> "Settings":
        """Build settings; `overrides` (from CLI flags) win, `None` values are ignored."""
        if config_file is not None:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"config file not found: {config_file}")
            os.environ[CONFIG_ENV] = str(config_file)
        return cls(**{k: v for k, v in overrides.items() if v is not None})
