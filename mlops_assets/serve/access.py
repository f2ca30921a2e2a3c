"""The model service's door, as pure ASGI middleware: authentication, roles and rate limits.

Runs inside ``ObserveRequests`` (so refusals are counted and logged like every answer) and
before any route: a request for a protected path (``auth.PATH_ROLES``) must carry a credential
with the path's role (401, 403), and every client has a rate limit (429 with ``Retry-After``):
``rate_limit`` per authenticated client (the key's name or the token's subject) on the scoring
and admin paths, and ``failed_auth_limit`` per address for requests whose credential fails, so
guessing keys is slow. The limiter's moving windows live in memory and expire, so a flood of
distinct clients cannot grow it without bound (``limits``' memory storage).

JWT verification may fetch the issuer's JWKS (cached): it runs in a worker thread, never on
the event loop.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from mlops_assets.serve.auth import Authenticator, Principal, Unauthenticated
from mlops_assets.serve.observe import error_response

log = logging.getLogger(__name__)


class RateLimits:
    """Moving-window limits per key (``limits``' in-memory storage)."""

    def __init__(self, rate_limit: str | None, failed_auth_limit: str) -> None:
        from limits import parse
        from limits.storage import MemoryStorage
        from limits.strategies import MovingWindowRateLimiter

        self._storage = MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        try:
            self.client_limit = parse(rate_limit) if rate_limit else None
            self.failed_limit = parse(failed_auth_limit)
        except ValueError as error:
            raise ValueError(
                f"invalid rate limit ({error}); write e.g. '200/second' or '1000 per minute'"
            ) from None

    def hit(self, kind: str, key: str) -> float | None:
        """Count one request; None when allowed, else the seconds until the next is."""
        item = self.client_limit if kind == "client" else self.failed_limit
        if item is None:  # no limit of that kind
            return None
        if self._limiter.hit(item, kind, key):
            return None
        stats = self._limiter.get_window_stats(item, kind, key)
        return max(stats.reset_time - time.time(), 0.0)


def _header(scope: Any, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _client_address(scope: Any) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"


class AccessControl:
    """ASGI middleware (see the module doc)."""

    def __init__(
        self, app: Any, authenticator: Authenticator | None, limits: RateLimits | None
    ) -> None:
        self.app = app
        self.authenticator = authenticator
        self.limits = limits

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _refusal(self, scope: Any) -> Any:
        path = scope["path"]
        authenticator = self.authenticator
        role = authenticator.required_role(path) if authenticator is not None else None
        principal: Principal | None = None
        if role is not None and authenticator is not None:
            authorization = _header(scope, b"authorization")
            try:
                if authorization and authorization.count(".") == 2 and authenticator.jwt:
                    principal = await run_in_threadpool(authenticator.authenticate, authorization)
                else:
                    principal = authenticator.authenticate(authorization)
            except Unauthenticated as reason:
                address = _client_address(scope)
                log.info("refused %s from %s: %s", path, address, reason)
                wait = self.limits.hit("failed", address) if self.limits else None
                if wait is not None:
                    return self._too_many(wait, "too many requests with bad credentials")
                return _unauthorized("missing or invalid credentials")
            scope.setdefault("state", {})["client"] = principal.name
            if role not in principal.roles:
                log.info("refused %s to %s: lacks role %s", path, principal.name, role)
                return error_response(
                    403, f"this credential lacks the '{role}' role for {path}", role=role
                )
        if self.limits is not None and path in ("/predict", "/predict/batch", "/reload"):
            client = principal.name if principal is not None else _client_address(scope)
            wait = self.limits.hit("client", client)
            if wait is not None:
                return self._too_many(wait, f"rate limit of {self.limits.client_limit} exceeded")
        return None

    @staticmethod
    def _too_many(wait: float, message: str) -> Any:
        retry_after = max(1, math.ceil(wait))
        response = error_response(429, message, retry_after_seconds=retry_after)
        response.headers["Retry-After"] = str(retry_after)
        return response


def _unauthorized(message: str) -> Any:
    response = error_response(401, message)
    response.headers["WWW-Authenticate"] = 'Bearer realm="mlops-assets model service"'
    return response
