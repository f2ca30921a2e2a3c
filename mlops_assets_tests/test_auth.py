"""Who may call the model service: API key files, JWTs verified against a real issuer's JWKS
served on loopback, and roles."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

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
from mlops_assets_tests.serve_world import NAME, World

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


# ---------------------------------------------------------------- the service's door


PREDICT_KEY = "gateway-" + "p" * 32
ADMIN_KEY = "operator-" + "a" * 32


def _authenticator(issuer: Issuer, metrics_open: bool = True) -> Authenticator:
    keys = ApiKeys.parse(f"gateway predict {PREDICT_KEY}\nops admin {ADMIN_KEY}\n", "keys")
    return Authenticator(keys, _verifier(issuer), metrics_open=metrics_open)


def _bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def test_every_door_asks_for_the_right_role_and_never_answers_500(
    world: World, issuer: Issuer
) -> None:
    request = world.requests[0]
    with TestClient(world.app(authenticator=_authenticator(issuer), refresh_seconds=0)) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/ready").status_code == 200
        assert client.get("/metrics").status_code == 200  # open unless limited
        for headers in ({}, _bearer("nope-" + "x" * 30), {"Authorization": "Basic abc"}):
            refused = client.post("/predict", json=request, headers=headers)
            assert refused.status_code == 401, refused.text
            assert refused.headers["WWW-Authenticate"].startswith("Bearer")
            assert "message" in refused.json()["detail"]
        assert (
            client.post("/predict", json=request, headers=_bearer(PREDICT_KEY)).status_code == 200
        )
        batch = {"transactions": world.requests[:3]}
        assert (
            client.post("/predict/batch", json=batch, headers=_bearer(PREDICT_KEY)).status_code
            == 200
        )
        # the scoring key cannot reload the model or read its lineage
        for method, path in (("post", "/reload"), ("get", "/model-info")):
            forbidden = getattr(client, method)(path, headers=_bearer(PREDICT_KEY))
            assert forbidden.status_code == 403 and forbidden.json()["detail"]["role"] == "admin"
            assert getattr(client, method)(path, headers=_bearer(ADMIN_KEY)).status_code == 200
        # tokens of the identity provider: roles from the token
        token = issuer.token(roles=["predict"])
        assert client.post("/predict", json=request, headers=_bearer(token)).status_code == 200
        assert client.get("/model-info", headers=_bearer(token)).status_code == 403
        expired = issuer.token(roles=["predict", "admin"], expires_in=-300)
        assert client.post("/predict", json=request, headers=_bearer(expired)).status_code == 401
        metrics = client.get("/metrics").text
        assert 'endpoint="/predict",status="401"' in metrics
        assert 'endpoint="/reload",status="403"' in metrics
        assert 'status="500"' not in metrics


def test_metrics_can_be_limited_to_the_metrics_role(world: World, issuer: Issuer) -> None:
    authenticator = _authenticator(issuer, metrics_open=False)
    with TestClient(world.app(authenticator=authenticator, refresh_seconds=0)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=_bearer(ADMIN_KEY)).status_code == 403
        scraper = issuer.token(subject="prometheus", roles=["metrics"])
        assert client.get("/metrics", headers=_bearer(scraper)).status_code == 200


def test_clients_are_rate_limited_and_key_guessing_is_slowed(world: World, issuer: Issuer) -> None:
    app = world.app(
        authenticator=_authenticator(issuer),
        refresh_seconds=0,
        rate_limit="5/minute",
        failed_auth_limit="3/minute",
    )
    with TestClient(app) as client:
        answers = [
            client.post("/predict", json=world.requests[0], headers=_bearer(PREDICT_KEY))
            for _ in range(7)
        ]
        assert [a.status_code for a in answers] == [200] * 5 + [429] * 2
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60
        # another client keeps its own allowance
        token = issuer.token(subject="other-client", roles=["predict"])
        assert (
            client.post("/predict", json=world.requests[0], headers=_bearer(token)).status_code
            == 200
        )
        guesses = [
            client.post("/predict", json=world.requests[0], headers=_bearer(f"guess-{i:030d}"))
            for i in range(5)
        ]
        assert [g.status_code for g in guesses] == [401] * 3 + [429] * 2


def test_a_flood_of_bad_requests_neither_crashes_nor_grows_the_service(
    world: World, issuer: Issuer
) -> None:
    import resource

    with TestClient(world.app(authenticator=_authenticator(issuer), refresh_seconds=0)) as client:
        bodies = [b"{", b"[]", b'{"amount": "lots"}', b"\xff\xfe", b"[" * 5000, b"1e999999"]

        def flood(rounds: int) -> set[int]:
            statuses = set()
            for i in range(rounds):
                body = bodies[i % len(bodies)]
                headers = _bearer(PREDICT_KEY) if i % 2 else _bearer(f"bad-{i:030d}")
                statuses.add(client.post("/predict", content=body, headers=headers).status_code)
            return statuses

        flood(300)  # warm up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        statuses = flood(3000)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        assert statuses <= {401, 422, 429}, statuses
        assert grown_mb < 40, f"the service grew {grown_mb:.0f} MB under the flood"
        assert client.post(
            "/predict", json=world.requests[0], headers=_bearer(ADMIN_KEY + "x")
        ).status_code in (401, 429)
        assert client.get("/ready").status_code == 200


def test_a_request_whose_pass_takes_too_long_gets_503_not_500(world: World) -> None:
    import time as clock

    from mlops_assets.registry.champion import load_scorer
    from mlops_assets.serve.app import ServeConfig, create_app
    from mlops_assets.serve.model_holder import ModelHolder
    from mlops_assets.serve.online_features import load_history

    def slow_loader(model):
        scorer = load_scorer(model)

        def slow(frame):
            clock.sleep(0.5)
            return scorer(frame)

        return slow

    config = ServeConfig(model_name=NAME, refresh_seconds=0, request_timeout_seconds=0.1)
    lake = world.resources["lake"]
    app = create_app(
        ModelHolder(world.resources["mlflow_tracking"].client, NAME, "champion", slow_loader),
        lambda: load_history(lake, 2),
        config,
    )
    with TestClient(app) as client:
        response = client.post("/predict", json=world.requests[0])
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert "did not finish within 0.1 s" in response.json()["detail"]["message"]
        clock.sleep(1.0)  # the pass finished after its caller gave up: the thread lives on
        assert app.state.service.worker._thread.is_alive()
        assert client.post("/predict", json=world.requests[1]).status_code == 503
