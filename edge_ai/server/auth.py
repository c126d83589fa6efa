"""Who is asking: API keys to principals (tenant, rights), and each key's own limits.

A key is compared by its sha256 against every configured key's, each comparison constant-time and none
skipped, so neither timing nor an early exit says how much of a guess was right. The configuration may
hold only hashes; edge-ai never logs or stores a key, only a short hash prefix that names it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_ai.config import CONFIG_ENV, ApiKey, Settings
from edge_ai.errors import Forbidden, RateLimited, Unauthorized

log = logging.getLogger("edge_ai.auth")


@dataclass(eq=False)
class Principal:
    """The caller of one request. `tenant` scopes the cache; `key_id` names the key in logs (a hash prefix)."""

    tenant: str
    key_id: str = ""
    admin: bool = False
    metrics: bool = False
    limits: "KeyLimits | None" = None
    last_used: float = 0.0

    def scoped(self, narrow: str) -> str:
        """`x-edge-tenant` narrows within the key's tenant; it never reaches another tenant's entries."""
        if not narrow:
            return self.tenant
        return f"{self.tenant}/{narrow}" if self.tenant else narrow

    def require_admin(self) -> None:
        if not self.admin:
            raise Forbidden("this endpoint needs an admin key")

    def require_metrics(self) -> None:
        if not (self.admin or self.metrics):
            raise Forbidden("this endpoint needs an admin or metrics key")


OPEN = Principal(tenant="", key_id="", admin=True, metrics=True)  # no keys configured: the embedded default


@dataclass
class KeyLimits:
    """Requests per minute (a token bucket: bursts up to the minute's allowance) and requests in flight."""

    per_minute: int | None
    concurrent: int | None
    tokens: float = 0.0
    refilled: float = field(default_factory=time.monotonic)
    in_flight: int = 0

    def __post_init__(self) -> None:
        self.tokens = float(self.per_minute or 0)

    def admit(self) -> None:
        """Take one request or raise RateLimited with the seconds until one would be admitted."""
        if self.concurrent is not None and self.in_flight >= self.concurrent:
            raise RateLimited(f"this key has {self.in_flight} requests in flight (its limit is {self.concurrent})", retry_after=1)
        if self.per_minute is not None:
            now = time.monotonic()
            rate = self.per_minute / 60.0
            self.tokens = min(float(self.per_minute), self.tokens + (now - self.refilled) * rate)
            self.refilled = now
            if self.tokens < 1.0:
                wait = max(1, int((1.0 - self.tokens) / rate + 0.999))
                raise RateLimited(f"this key is limited to {self.per_minute} requests a minute", retry_after=wait)
            self.tokens -= 1.0
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1


def key_id(digest: bytes) -> str:
    return digest.hex()[:12]


def presented_key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """`Authorization: Bearer …` (OpenAI SDKs) or `x-api-key` (Anthropic SDKs), from the raw ASGI headers."""
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            if text[:7].lower() == "bearer ":
                return text[7:].strip() or None
        elif name == b"x-api-key":
            return value.decode("latin-1").strip() or None
    return None


class KeyRing:
    """The configured keys. `identify` maps a request's key to its principal or raises Unauthorized."""

    def __init__(self, settings: Settings) -> None:
        self.keys: list[tuple[bytes, Principal]] = [(k.digest(), _principal(k)) for k in settings.api_keys]
        self.open = not self.keys
        # gateway mode sending the client's own key to the cloud: each key gets its own cache unless shared
        self.tenant_per_passthrough_key = (
            self.open and settings.passes_keys_through() and settings.passthrough_tenancy == "per_key"
        )
        self._passthrough: dict[bytes, Principal] = {}
        _warn_if_secret_readable(settings.api_keys)

    def tenants(self) -> list[str]:
        return sorted({p.tenant for _, p in self.keys})

    def identify(self, headers: list[tuple[bytes, bytes]]) -> Principal:
        key = presented_key(headers)
        if self.open:
            if key is None or not self.tenant_per_passthrough_key:
                return OPEN
            return self._passthrough_principal(key)
        if key is None:
            raise Unauthorized()
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for known, principal in self.keys:  # every key compared, whatever matched
            if hmac.compare_digest(known, digest):
                found = principal
        if found is None:
            raise Unauthorized("the API key is not valid")
        found.last_used = time.time()
        return found

    def _passthrough_principal(self, key: str) -> Principal:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
        principal = self._passthrough.get(digest)
        if principal is None:
            if len(self._passthrough) >= 65536:  # bounded: a flood of made-up keys cannot grow it forever
                self._passthrough.clear()
            principal = self._passthrough[digest] = Principal(tenant=f"key-{key_id(digest)}", key_id=key_id(digest))
        principal.last_used = time.time()
        return principal

    def listing(self) -> list[dict[str, object]]:
        """What /admin/keys shows: never the key, only its hash prefix."""
        return [
            {"key_id": p.key_id, "tenant": p.tenant, "admin": p.admin, "metrics": p.metrics,
             "requests_per_minute": p.limits.per_minute if p.limits else None,
             "max_concurrent": p.limits.concurrent if p.limits else None,
             "last_used": p.last_used or None}
            for _, p in self.keys
        ]


def _principal(k: ApiKey) -> Principal:
    limits = KeyLimits(k.requests_per_minute, k.max_concurrent) if (k.requests_per_minute or k.max_concurrent) else None
    return Principal(tenant=k.tenant, key_id=key_id(k.digest()), admin=k.admin, metrics=k.metrics, limits=limits)


def _warn_if_secret_readable(keys: list[ApiKey]) -> None:
    path = os.environ.get(CONFIG_ENV)
    if not path or not any(k.key for k in keys):
        return
    try:
        mode = Path(path).stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s holds API keys in the clear and other users can read it: chmod 600 it, or use key_sha256", path)
