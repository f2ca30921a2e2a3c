"""Who may call the model service, and for what: bearer credentials and roles.

A request carries ``Authorization: Bearer <credential>``: either a static API key (simple
setups; keys come from a file or an environment variable named by the settings, never from the
settings themselves) or a JWT from the identity provider, verified against the issuer's JWKS
(signature, ``iss``, ``aud``, ``exp``; RS/ES/PS algorithms only, never ``none`` or HMAC with a
public key). Roles:

- ``predict``: ``POST /predict`` and ``/predict/batch``;
- ``admin``: ``POST /reload``, ``GET /model-info`` (lineage, tags, canary and shadow state);
- ``metrics``: ``GET /metrics`` when the metrics are limited (``MLOPS_SERVE_METRICS_AUTH``).

``/health`` and ``/ready`` stay open for the probes, and so does ``/docs``' OpenAPI page (it
holds no data). No or a bad credential is a 401 with ``WWW-Authenticate: Bearer``, a valid one
without the role a 403; neither says which keys exist, and credentials are never logged (the
log names the client: the key's name or the token's subject).

API key file: one key per line, ``<client name> <roles, comma-separated> <key>``; blank lines and
``#`` comments are ignored. Keys are compared by SHA-256 digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PREDICT, ADMIN, METRICS = "predict", "admin", "metrics"
ROLES = frozenset({PREDICT, ADMIN, METRICS})
#: the role each protected path needs (every other path of the service is open or 404)
PATH_ROLES: Mapping[str, str] = {
    "/predict": PREDICT,
    "/predict/batch": PREDICT,
    "/reload": ADMIN,
    "/model-info": ADMIN,
    "/metrics": METRICS,
}
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256", "PS384", "PS512"]
MIN_KEY_CHARS = 24


class AuthConfigError(ValueError):
    """The authentication settings or key file are wrong (the message says where)."""


class Unauthenticated(Exception):
    """No credential, or one that is not valid (the reason is for the log, not the caller)."""


@dataclass(frozen=True)
class Principal:
    """Who is calling, and what they may do."""

    name: str
    roles: frozenset[str]
    kind: str  # "api_key" | "jwt" | "anonymous"


@dataclass(frozen=True)
class ApiKeys:
    """Static API keys, by SHA-256 digest."""

    by_digest: dict[bytes, Principal] = field(default_factory=dict)

    @staticmethod
    def digest(key: str) -> bytes:
        return hashlib.sha256(key.encode()).digest()

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKeys:
        """Keys from the key file format (see the module doc); errors name the line."""
        keys: dict[bytes, Principal] = {}
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            where = f"{source} line {number}"
            if len(parts) != 3:
                raise AuthConfigError(
                    f"{where}: expected '<client name> <roles> <key>', got {len(parts)} fields"
                )
            name, roles_text, key = parts
            roles = frozenset(r for r in roles_text.split(",") if r)
            unknown = roles - ROLES
            if unknown or not roles:
                raise AuthConfigError(
                    f"{where}: unknown role(s) {sorted(unknown) or '(none)'} for {name}; roles "
                    f"are {', '.join(sorted(ROLES))}"
                )
            if len(key) < MIN_KEY_CHARS:
                raise AuthConfigError(
                    f"{where}: the key of {name} is {len(key)} characters; use at least "
                    f"{MIN_KEY_CHARS} random ones (mlops-assets serve generates one)"
                )
            digest = cls.digest(key)
            if digest in keys:
                raise AuthConfigError(f"{where}: the key of {name} is also another client's")
            keys[digest] = Principal(name, roles, "api_key")
        return cls(keys)

    def find(self, credential: str) -> Principal | None:
        digest = self.digest(credential)
        for known, principal in self.by_digest.items():  # constant time per comparison
            if hmac.compare_digest(known, digest):
                return principal
        return None


@dataclass(frozen=True)
class JwtVerifier:
    """Verifies tokens of one issuer against its JWKS (keys cached, refetched on an unknown
    ``kid``); the roles come from ``roles_claim`` (a list, or a space-separated string such as
    OAuth's ``scope``), keeping only the service's roles."""

    jwks_url: str
    issuer: str
    audience: str
    roles_claim: str = "roles"
    leeway_seconds: int = 30
    client: Any = None

    @classmethod
    def create(cls, jwks_url: str, issuer: str, audience: str, roles_claim: str) -> JwtVerifier:
        import jwt

        for name, value in (("jwks_url", jwks_url), ("issuer", issuer), ("audience", audience)):
            if not value:
                raise AuthConfigError(f"JWT authentication needs MLOPS_SERVE_JWT_{name.upper()}")
        client = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=600, timeout=5)
        return cls(jwks_url, issuer, audience, roles_claim, client=client)

    def verify(self, token: str) -> Principal:
        """The token's principal; ``Unauthenticated`` with the reason when it is not valid."""
        import jwt

        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") not in JWT_ALGORITHMS:
                raise Unauthenticated(f"token algorithm {header.get('alg')!r} not accepted")
            key = self.client.get_signing_key_from_jwt(token)
            claims = jwt.decode(
                token,
                key.key,
                algorithms=JWT_ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except Unauthenticated:
            raise
        except jwt.PyJWKClientConnectionError as error:
            raise Unauthenticated(f"the issuer's JWKS could not be fetched: {error}") from None
        except (jwt.PyJWTError, ValueError) as error:
            raise Unauthenticated(f"invalid token: {type(error).__name__}: {error}") from None
        raw = claims.get(self.roles_claim, [])
        granted = raw.split() if isinstance(raw, str) else raw if isinstance(raw, list) else []
        roles = frozenset(str(r) for r in granted) & ROLES
        return Principal(str(claims["sub"]), roles, "jwt")


@dataclass(frozen=True)
class Authenticator:
    """Decides who a request's credential belongs to (API keys first, then the JWT issuer)."""

    api_keys: ApiKeys | None = None
    jwt: JwtVerifier | None = None
    metrics_open: bool = True

    def __post_init__(self) -> None:
        if self.api_keys is None and self.jwt is None:
            raise AuthConfigError("authentication is on but has no API keys and no JWT issuer")

    def required_role(self, path: str) -> str | None:
        role = PATH_ROLES.get(path)
        if role == METRICS and self.metrics_open:
            return None
        return role

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization`` header value."""
        if not authorization:
            raise Unauthenticated("no Authorization header")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise Unauthenticated("the Authorization header is not 'Bearer <credential>'")
        if self.api_keys is not None:
            principal = self.api_keys.find(credential)
            if principal is not None:
                return principal
        if self.jwt is not None and credential.count(".") == 2:
            return self.jwt.verify(credential)
        raise Unauthenticated("unknown API key")


def read_secret(file: str | None, env_var: str | None, what: str) -> str | None:
    """A secret by reference: the contents of ``file``, or the value of the environment
    variable named ``env_var``; None when neither is given. Errors name the reference, never
    the value."""
    if file:
        path = Path(file).expanduser()
        try:
            return path.read_text()
        except OSError as error:
            raise AuthConfigError(f"{what}: cannot read {path}: {error.strerror}") from None
    if env_var:
        value = os.environ.get(env_var)
        if value is None:
            raise AuthConfigError(f"{what}: the environment variable {env_var} is not set")
        return value
    return None


def generate_local_key(path: Path, roles: Iterable[str] = (PREDICT, ADMIN, METRICS)) -> str:
    """A new random key for local use, written to ``path`` (mode 0600) in the key file format."""
    key = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(
            "# API keys of the local model service: <client name> <roles> <key>\n"
            f"local {','.join(roles)} {key}\n"
        )
    return key


def local_key_file(settings: Any) -> Path:
    """Where ``mlops-assets serve`` keeps the key it generates for local use."""
    return settings.home_path / "serve" / "api-keys"


def authenticator_from_settings(settings: Any) -> Authenticator | None:
    """The service's authentication as the settings describe it (``MLOPS_SERVE_AUTH``):

    - ``keys`` (default): API keys from ``MLOPS_SERVE_API_KEYS_FILE``, or from the environment
      variable named by ``MLOPS_SERVE_API_KEYS_ENV``; with neither, the local key file under
      the project home, generated (and announced once in the log) when missing;
    - ``jwt``: tokens of the issuer ``MLOPS_SERVE_JWT_ISSUER`` (JWKS ``MLOPS_SERVE_JWT_JWKS_URL``,
      audience ``MLOPS_SERVE_JWT_AUDIENCE``, roles in ``MLOPS_SERVE_JWT_ROLES_CLAIM``);
    - ``keys+jwt``: both; ``off``: nobody is asked (a warning says so).
    """
    mode = settings.serve_auth
    if mode == "off":
        return None
    api_keys = None
    if "keys" in mode:
        text = read_secret(settings.serve_api_keys_file, settings.serve_api_keys_env, "API keys")
        source = settings.serve_api_keys_file or f"${settings.serve_api_keys_env}"
        if text is None:
            path = local_key_file(settings)
            if not path.exists():
                key = generate_local_key(path)
                log.warning(
                    "generated an API key for this local service (roles predict, admin, "
                    "metrics), kept in %s: send 'Authorization: Bearer %s'",
                    path,
                    key,
                )
            text, source = path.read_text(), str(path)
        api_keys = ApiKeys.parse(text, source)
    verifier = None
    if "jwt" in mode:
        verifier = JwtVerifier.create(
            settings.serve_jwt_jwks_url or "",
            settings.serve_jwt_issuer or "",
            settings.serve_jwt_audience or "",
            settings.serve_jwt_roles_claim,
        )
    return Authenticator(api_keys, verifier, metrics_open=not settings.serve_metrics_auth)
