"""Errors the answer path raises; each dialect renders them in its own envelope."""

from __future__ import annotations


class EdgeError(Exception):
    status = 500
    kind = "server_error"  # a neutral name; dialects map it to their own error types

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


class BadRequest(EdgeError):
    status = 400
    kind = "invalid_request"


class ContextOverflow(BadRequest):
    """Prompt plus requested answer does not fit the model's context."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="max_tokens", code="context_length_exceeded")


class NotFound(EdgeError):
    status = 404
    kind = "not_found"


class RequestTimeout(EdgeError):
    status = 408
    kind = "request_timeout"


class PayloadTooLarge(EdgeError):
    status = 413
    kind = "request_too_large"


class Unauthorized(EdgeError):
    """No valid API key (keys are configured)."""

    status = 401
    kind = "authentication"

    def __init__(self, message: str = "a valid API key is required (Authorization: Bearer or x-api-key)") -> None:
        super().__init__(message, code="invalid_api_key")


class Forbidden(EdgeError):
    """A valid key that may not do this (an admin endpoint with a tenant's key)."""

    status = 403
    kind = "permission"

    def __init__(self, message: str = "this key may not use this endpoint") -> None:
        super().__init__(message, code="permission_denied")


class Overloaded(EdgeError):
    """A bounded queue is full; the client should retry after `retry_after` seconds."""

    status = 429
    kind = "overloaded"

    def __init__(self, message: str = "edge-ai is at capacity; retry shortly", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(Overloaded):
    """This key's own limit (requests per minute, concurrent requests), not the server's capacity."""

    kind = "rate_limited"
