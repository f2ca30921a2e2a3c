"""Who may call the model service: API key files, JWTs verified against a real issuer's JWKS
served on loopback, and roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mlops_assets.serve.auth import (
    ADMIN,
    METRICS,
    PREDICT,
    ApiKeys,
    AuthConfigError,
    Authenticator,
    JwtVerifier,
    Unauthenticated,
    generate_local_key,
    read_secret,
)
from mlops_assets_tests.oidc_issuer import Issuer, running_issuer

KEY_A = "k" * 12 + "A" * 20
KEY_B = "z" * 40


@pytest.fixture(scope="module")
def issuer() -> Iterator[Issuer]:
    with running_issuer() as running:
        yield running


def _verifier(issuer: Issuer, roles_claim: str = "roles") -> JwtVerifier:
    return JwtVerifier.create(issuer.jwks_url, issuer.url, "mlops-model-service", roles_claim)


def test_the_key_file_gives_each_client_its_roles() -> None:
    keys = ApiKeys.parse(
        f"# scoring clients\n\npayments-gateway predict {KEY_A}\nops admin,metrics {KEY_B}\n",
        "keys.txt",
    )
    auth = Authenticator(api_keys=keys)
    gateway = auth.authenticate(f"Bearer {KEY_A}")
    assert gateway.name == "payments-gateway" and gateway.roles == {PREDICT}
    assert auth.authenticate(f"bearer   {KEY_B}").roles == {ADMIN, METRICS}
    for header in (None, "", KEY_A, f"Basic {KEY_A}", "Bearer ", f"Bearer {KEY_A}x"):
        with pytest.raises(Unauthenticated):
            auth.authenticate(header)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"gateway {KEY_A}", "keys.txt line 1: expected '<client name> <roles> <key>', got 2"),
        (f"\ngateway predict,root {KEY_A}", r"keys.txt line 2: unknown role\(s\) \['root'\]"),
        ("gateway predict short-key", "line 1: the key of gateway is 9 characters"),
        (f"a predict {KEY_A}\nb admin {KEY_A}", "line 2: the key of b is also another client's"),
    ],
)
def test_a_bad_key_file_names_the_line_and_never_the_key(text: str, message: str) -> None:
    with pytest.raises(AuthConfigError, match=message) as raised:
        ApiKeys.parse(text, "keys.txt")
    assert KEY_A not in str(raised.value)


def test_secrets_come_by_reference_and_errors_name_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "keys"
    key = generate_local_key(path)
    assert path.stat().st_mode & 0o777 == 0o600
    keys = ApiKeys.parse(read_secret(str(path), None, "API keys") or "", str(path))
    assert Authenticator(api_keys=keys).authenticate(f"Bearer {key}").roles == {
        PREDICT,
        ADMIN,
        METRICS,
    }
    monkeypatch.setenv("SERVICE_KEYS", f"gateway predict {KEY_A}")
    assert read_secret(None, "SERVICE_KEYS", "API keys") == f"gateway predict {KEY_A}"
    with pytest.raises(AuthConfigError, match="API keys: the environment variable NOPE is not"):
        read_secret(None, "NOPE", "API keys")
    with pytest.raises(AuthConfigError, match=r"cannot read .*missing"):
        read_secret(str(tmp_path / "missing"), None, "API keys")
    with pytest.raises(AuthConfigError, match="no API keys and no JWT issuer"):
        Authenticator()


def test_metrics_are_open_unless_limited() -> None:
    keys = ApiKeys.parse(f"a predict {KEY_A}", "k")
    assert Authenticator(api_keys=keys).required_role("/metrics") is None
    limited = Authenticator(api_keys=keys, metrics_open=False)
    assert limited.required_role("/metrics") == METRICS
    assert limited.required_role("/predict/batch") == PREDICT
    assert limited.required_role("/reload") == ADMIN
    assert limited.required_role("/model-info") == ADMIN
    assert limited.required_role("/health") is None and limited.required_role("/ready") is None


def test_a_token_of_the_issuer_is_verified_against_its_jwks(issuer: Issuer) -> None:
    verifier = _verifier(issuer)
    auth = Authenticator(jwt=verifier)
    before = issuer.jwks_requests
    for _ in range(20):
        principal = auth.authenticate(f"Bearer {issuer.token(roles=['predict', 'admin', 'x'])}")
        assert principal.name == "analyst@bank.example"
        assert principal.roles == {PREDICT, ADMIN}  # unknown roles are dropped
        assert principal.kind == "jwt"
    assert issuer.jwks_requests - before <= 1  # the keys are cached
    scoped = _verifier(issuer, roles_claim="scope")
    assert scoped.verify(issuer.token(roles=None, scope="openid predict")).roles == {PREDICT}


def _forged_none(issuer: Issuer) -> str:
    return jwt.encode(
        {"iss": issuer.url, "sub": "x", "aud": "mlops-model-service", "exp": time.time() + 60},
        key=None,
        algorithm="none",
    )


@pytest.mark.parametrize(
    ("case", "token"),
    [
        ("expired", lambda i: i.token(expires_in=-120)),
        ("another audience", lambda i: i.token(audience="another-service")),
        ("another issuer", lambda i: i.token(issuer="https://evil.example")),
        (
            "another key",
            lambda i: i.token(key=rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ),
        ("alg none", _forged_none),
        ("not a token", lambda i: "a.b.c"),
    ],
)
def test_a_token_that_is_not_valid_is_refused(issuer: Issuer, case: str, token) -> None:
    with pytest.raises(Unauthenticated):
        Authenticator(jwt=_verifier(issuer)).authenticate(f"Bearer {token(issuer)}")


def test_a_jwt_setup_without_its_settings_is_a_clear_error(issuer: Issuer) -> None:
    with pytest.raises(AuthConfigError, match="MLOPS_SERVE_JWT_AUDIENCE"):
        JwtVerifier.create(issuer.jwks_url, issuer.url, "", "roles")
