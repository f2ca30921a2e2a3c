"""A real, minimal OpenID Connect issuer for the tests: an RSA key, its JWKS and the discovery
document served over HTTP on loopback, tokens signed with it (what an identity provider gives
the service's callers), and the authorization-code flow with PKCE that an authenticating proxy
such as oauth2-proxy drives: ``/authorize`` signs in ``login_email`` at once (the person at the
identity provider's login page), ``/token`` checks the client's secret, the redirect URI and
the code verifier before it issues an ID token."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class Issuer:
    url: str
    key: rsa.RSAPrivateKey
    kid: str = "test-key-1"
    jwks_requests: int = 0
    #: registered clients (client id -> secret) allowed to use the authorization-code flow
    clients: dict[str, str] = field(default_factory=dict)
    #: who signs in at /authorize, and their groups
    login_email: str = "analyst@bank.example"
    login_groups: list[str] = field(default_factory=lambda: ["fraud-analysts"])
    #: every /authorize request's parameters, in order
    authorize_requests: list[dict[str, str]] = field(default_factory=list)
    #: codes issued and not yet redeemed: code -> what /authorize was asked
    pending_codes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: what the token endpoint refused, in words (a test reads why a login failed)
    refusals: list[str] = field(default_factory=list)

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def jwks(self) -> dict[str, Any]:
        public = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        return {"keys": [{**public, "kid": self.kid, "use": "sig", "alg": "RS256"}]}

    def token(
        self,
        subject: str = "analyst@bank.example",
        roles: list[str] | str | None = None,
        audience: str = "mlops-model-service",
        expires_in: float = 300,
        issuer: str | None = None,
        key: rsa.RSAPrivateKey | None = None,
        **claims: Any,
    ) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer or self.url,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "exp": now + int(expires_in),
            "roles": roles if roles is not None else ["predict"],
            **claims,
        }
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def authorize(self, query: dict[str, str]) -> str:
        """Where /authorize sends the browser: the client's redirect URI with a one-time code
        (or an OAuth error) and the client's state."""
        self.authorize_requests.append(dict(query))
        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") not in self.clients or not redirect_uri:
            raise ValueError(f"unknown client {query.get('client_id')!r}")
        if query.get("response_type") != "code":
            answer = {"error": "unsupported_response_type"}
        else:
            code = secrets.token_urlsafe(16)
            self.pending_codes[code] = dict(query)
            answer = {"code": code}
        return f"{redirect_uri}?{urlencode({**answer, 'state': query.get('state', '')})}"

    def redeem(self, form: dict[str, str], authorization: str | None) -> dict[str, Any] | None:
        """The token endpoint: an ID and access token for a valid code, else None (and the reason
        in ``refusals``). Client authentication: HTTP Basic or client_secret_post."""
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            decoded = base64.b64decode(authorization[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
        asked = self.pending_codes.pop(form.get("code", ""), None)
        problem = None
        if form.get("grant_type") != "authorization_code":
            problem = f"grant_type {form.get('grant_type')!r}"
        elif client_id not in self.clients or self.clients[client_id] != client_secret:
            problem = f"bad client credentials for {client_id!r}"
        elif asked is None:
            problem = "unknown or reused code"
        elif asked["client_id"] != client_id or asked["redirect_uri"] != form.get("redirect_uri"):
            problem = "code issued to another client or redirect URI"
        elif "code_challenge" in asked:
            verifier = form.get("code_verifier", "")
            digest = hashlib.sha256(verifier.encode()).digest()
            expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
            if asked.get("code_challenge_method", "plain") == "plain":
                expected = verifier
            if expected != asked["code_challenge"]:
                problem = "PKCE code verifier does not match the challenge"
        if problem:
            self.refusals.append(problem)
            return None
        assert asked is not None and client_id is not None
        claims = {"email": self.login_email, "email_verified": True, "groups": self.login_groups}
        if asked.get("nonce"):
            claims["nonce"] = asked["nonce"]
        id_token = self.token(
            subject=self.login_email, roles=[], audience=client_id, expires_in=600, **claims
        )
        return {
            "access_token": secrets.token_urlsafe(24),
            "id_token": id_token,
            "token_type": "Bearer",
            "expires_in": 600,
        }


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An issuer on a free loopback port, until the block ends."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    holder: dict[str, Issuer] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer = holder["issuer"]
            url = urlsplit(self.path)
            if url.path == "/authorize":
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                try:
                    location = issuer.authorize(query)
                except ValueError as error:
                    self.send_error(400, str(error))
                    return
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if url.path == "/userinfo":
                self._json(200, {"sub": issuer.login_email, "email": issuer.login_email})
                return
            if self.path == "/jwks":
                issuer.jwks_requests += 1
                body = issuer.jwks()
            elif self.path == "/.well-known/openid-configuration":
                body = {
                    "issuer": issuer.url,
                    "jwks_uri": issuer.jwks_url,
                    "authorization_endpoint": f"{issuer.url}/authorize",
                    "token_endpoint": f"{issuer.url}/token",
                    "userinfo_endpoint": f"{issuer.url}/userinfo",
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code"],
                    "code_challenge_methods_supported": ["S256", "plain"],
                    "token_endpoint_auth_methods_supported": [
                        "client_secret_basic",
                        "client_secret_post",
                    ],
                    "subject_types_supported": ["public"],
                }
            else:
                self.send_error(404)
                return
            self._json(200, body)

        def do_POST(self) -> None:
            issuer = holder["issuer"]
            if urlsplit(self.path).path != "/token":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            answer = issuer.redeem(form, self.headers.get("Authorization"))
            if answer is None:
                self._json(400, {"error": "invalid_grant"})
            else:
                self._json(200, answer)

        def _json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["issuer"] = Issuer(f"http://127.0.0.1:{server.server_port}", key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder["issuer"]
    finally:
        server.shutdown()
        server.server_close()
