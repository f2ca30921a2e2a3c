"""The Dagster webserver behind oauth2-proxy, as deploy/compose.yaml and
deploy/k8s/dagster-ui-proxy.yaml run it: the real proxy binary (scripts/ensure_oauth2_proxy.sh
builds the pinned release) with the deployment's own config file, in front of a real
``dagster-webserver`` over this code location on loopback, signing people in at a real OpenID
Connect issuer (authorization code + PKCE).

Without a session cookie or a valid token there is no page, no GraphQL and no websocket; forged
cookies, spoofed identity headers and tokens of another key, audience or past expiry change
nothing; people outside the allowed domain or group are refused after they sign in; with a
session the UI and its GraphQL work, and signing out ends it."""

from __future__ import annotations

import http.client
import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from mlops_assets_tests.helpers import free_port
from mlops_assets_tests.mlflow_server import stop_process_group
from mlops_assets_tests.oidc_issuer import Issuer, running_issuer

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PROXY_BINARY = PROJECT_ROOT / ".tools" / "bin" / "oauth2-proxy"
PROXY_CONFIG = PROJECT_ROOT / "deploy" / "oauth2-proxy" / "oauth2-proxy.cfg"
CLIENT_ID = "dagster-ui"
DAGSTER_TITLE = re.compile(r"<title[^>]*>Dagster</title>")
ANALYSTS = "fraud-analysts"
VERSION_QUERY = {"query": "{ version }"}
ASSETS_QUERY = {
    "query": """{
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes { name location { name } assetNodes { assetKey { path } } }
    }
  }
}"""
}


@dataclass
class Stack:
    issuer: Issuer
    proxy_url: str
    webserver_url: str
    proxy_log: Path

    def log_tail(self) -> str:
        return self.proxy_log.read_text(errors="replace")[-3000:]


def _wait(url: str, process: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise AssertionError(f"{url} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"{url} not up in {seconds} s:\n{log.read_text()}"
        time.sleep(0.5)


def _start(command: list[str], log: Path, **popen: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True, **popen
        )


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    assert PROXY_BINARY.exists(), (
        f"{PROXY_BINARY} is missing: run scripts/ensure_oauth2_proxy.sh (scripts/test does)"
    )
    work = tmp_path_factory.mktemp("ui-proxy")
    dagster_home = work / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "DAGSTER_"))}
    env.update(
        MLOPS_HOME=str(work / "home"),
        DAGSTER_HOME=str(dagster_home),
        MLOPS_AUTOMATION_ENABLED="false",
    )
    webserver_port, proxy_port = free_port(), free_port()
    webserver_url = f"http://127.0.0.1:{webserver_port}"
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    # the secrets as the deployments mount them: files, never arguments
    secret_dir = work / "secrets"
    secret_dir.mkdir(mode=0o700)
    client_secret = secrets.token_urlsafe(24)
    (secret_dir / "client-secret").write_text(client_secret)
    (secret_dir / "cookie-secret").write_text(secrets.token_urlsafe(24)[:32])
    webserver = _start(
        [
            str(BIN / "dagster-webserver"),
            "-h",
            "127.0.0.1",  # loopback only: reachable through the proxy, not from outside
            "-p",
            str(webserver_port),
            "-w",
            str(PROJECT_ROOT / "workspace.yaml"),
        ],
        work / "webserver.log",
        cwd=PROJECT_ROOT,
        env=env,
    )
    proxy = None
    try:
        with running_issuer() as issuer:
            issuer.clients[CLIENT_ID] = client_secret
            proxy_log = work / "oauth2-proxy.log"
            proxy = _start(
                [
                    str(PROXY_BINARY),
                    f"--config={PROXY_CONFIG}",
                    # what each deployment sets on the command line
                    f"--oidc-issuer-url={issuer.url}",
                    f"--client-id={CLIENT_ID}",
                    f"--redirect-url={proxy_url}/oauth2/callback",
                    f"--upstream={webserver_url}/",
                    "--email-domain=bank.example",
                    f"--allowed-group={ANALYSTS}",
                    f"--http-address=127.0.0.1:{proxy_port}",
                    # the test's secret files; plain HTTP on loopback, so no Secure cookie flag
                    f"--client-secret-file={secret_dir / 'client-secret'}",
                    f"--cookie-secret-file={secret_dir / 'cookie-secret'}",
                    "--cookie-secure=false",
                ],
                proxy_log,
            )
            _wait(f"{proxy_url}/ping", proxy, proxy_log, 30)
            _wait(f"{webserver_url}/server_info", webserver, work / "webserver.log", 240)
            yield Stack(issuer, proxy_url, webserver_url, proxy_log)
    finally:
        if proxy is not None:
            stop_process_group(proxy, grace_seconds=5)
        stop_process_group(webserver)


@pytest.fixture
def issuer(stack: Stack) -> Iterator[Issuer]:
    """The stack's issuer with its default person (an analyst of the allowed domain and group)
    signing in; restored after each test."""
    email, groups = stack.issuer.login_email, list(stack.issuer.login_groups)
    yield stack.issuer
    stack.issuer.login_email, stack.issuer.login_groups = email, groups


def _graphql(
    stack: Stack, session: requests.Session | None = None, **kwargs: Any
) -> requests.Response:
    client = session or requests
    return client.post(
        f"{stack.proxy_url}/graphql",
        json=kwargs.pop("body", VERSION_QUERY),
        timeout=60,
        allow_redirects=False,
        **kwargs,
    )


def _id_token(signer: Issuer, **overrides: Any) -> str:
    claims: dict[str, Any] = {
        "subject": "ci@bank.example",
        "roles": [],
        "audience": CLIENT_ID,
        "email": "ci@bank.example",
        "email_verified": True,
        "groups": [ANALYSTS],
    }
    claims.update(overrides)
    return signer.token(**claims)


def _sign_in(stack: Stack) -> tuple[requests.Session, requests.Response]:
    """What a browser does on opening the UI: follow the redirects through the identity provider
    and back (the provider signs in its current person at once)."""
    session = requests.Session()
    response = session.get(f"{stack.proxy_url}/", timeout=60)
    return session, response


def _is_dagster_ui(response: requests.Response) -> bool:
    return response.status_code == 200 and bool(DAGSTER_TITLE.search(response.text))


def test_the_webserver_itself_is_the_dagster_ui(stack: Stack) -> None:
    """The upstream (reached here directly, on loopback) serves the UI and GraphQL: what the
    proxy must and must not let through."""
    assert _is_dagster_ui(requests.get(f"{stack.webserver_url}/", timeout=60))
    direct = requests.post(f"{stack.webserver_url}/graphql", json=VERSION_QUERY, timeout=60)
    assert direct.status_code == 200 and direct.json()["data"]["version"]


def test_no_session_no_page_no_graphql_no_websocket(stack: Stack) -> None:
    page = requests.get(f"{stack.proxy_url}/", timeout=30, allow_redirects=False)
    assert page.status_code == 302
    assert page.headers["Location"].startswith(f"{stack.issuer.url}/authorize?")
    assert "Dagster" not in page.text
    for path in ("/server_info", "/assets", "/runs", "/overview/activity", "/dagit_info"):
        response = requests.get(f"{stack.proxy_url}{path}", timeout=30, allow_redirects=False)
        assert response.status_code == 302, path
        assert "version" not in response.text, path
    # programs get a plain 401 on GraphQL, never the data
    for response in (
        _graphql(stack),
        requests.get(f"{stack.proxy_url}/graphql", params={"query": "{ version }"}, timeout=30),
    ):
        assert response.status_code == 401
        assert '"data"' not in response.text
    # the UI's live updates: a websocket upgrade on /graphql without a session is refused
    host = stack.proxy_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.request(
        "GET",
        "/graphql",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "graphql-ws",
        },
    )
    assert connection.getresponse().status == 401
    connection.close()
    # the probes stay open
    assert requests.get(f"{stack.proxy_url}/ping", timeout=30).status_code == 200
    assert requests.get(f"{stack.proxy_url}/ready", timeout=30).status_code == 200


def test_forged_cookies_spoofed_headers_and_bad_tokens_change_nothing(
    stack: Stack, issuer: Issuer
) -> None:
    spoofed = {
        "X-Forwarded-Email": "analyst@bank.example",
        "X-Forwarded-User": "analyst",
        "X-Auth-Request-Email": "analyst@bank.example",
        "X-Forwarded-Groups": ANALYSTS,
    }
    assert _graphql(stack, headers=spoofed).status_code == 401
    assert _graphql(stack, cookies={"_mlops_ui": "forged|12345|abc"}).status_code == 401
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = {
        "signed by another key": _id_token(issuer, key=other_key),
        "expired": _id_token(issuer, expires_in=-120),
        "for another audience": _id_token(issuer, audience="mlops-model-service"),
        "from another issuer": _id_token(issuer, issuer="https://evil.example"),
        "not a JWT": "not-a-token",
    }
    for why, token in refused.items():
        response = _graphql(stack, headers={"Authorization": f"Bearer {token}"})
        assert response.status_code in (401, 403), (why, response.status_code)
        assert '"data"' not in response.text, why


def test_a_token_of_the_issuer_works_for_programs(stack: Stack, issuer: Issuer) -> None:
    """CI and scripts call GraphQL with an ID token of the same issuer and client."""
    response = _graphql(stack, headers={"Authorization": f"Bearer {_id_token(issuer)}"})
    assert response.status_code == 200, (response.status_code, stack.log_tail())
    assert response.json()["data"]["version"]
    # the same rules as for people: outside the analysts' group is refused
    outsider = _id_token(issuer, groups=["marketing"])
    response = _graphql(stack, headers={"Authorization": f"Bearer {outsider}"})
    assert response.status_code in (401, 403)


def test_an_analyst_signs_in_and_the_ui_works_until_sign_out(stack: Stack, issuer: Issuer) -> None:
    asked_before = len(issuer.authorize_requests)
    session, landing = _sign_in(stack)
    assert _is_dagster_ui(landing), (landing.status_code, landing.text[:500], stack.log_tail())
    # the flow was the authorization code with PKCE, for this client, and the code redeemed
    (asked,) = issuer.authorize_requests[asked_before:]
    assert asked["client_id"] == CLIENT_ID
    assert asked["code_challenge_method"] == "S256" and asked["code_challenge"]
    assert asked["redirect_uri"] == f"{stack.proxy_url}/oauth2/callback"
    assert not issuer.pending_codes and not issuer.refusals
    # the session cookie: encrypted, not readable by scripts, not sent cross-site
    (cookie,) = [c for c in session.cookies if c.name == "_mlops_ui"]
    assert cookie.has_nonstandard_attr("HttpOnly")
    assert cookie.get_nonstandard_attr("SameSite", "").lower() == "lax"
    assert issuer.login_email not in cookie.value
    # the UI's GraphQL: this code location and its assets
    response = _graphql(stack, session, body=ASSETS_QUERY)
    assert response.status_code == 200, response.text[:500]
    (repository,) = response.json()["data"]["repositoriesOrError"]["nodes"]
    assets = {"/".join(node["assetKey"]["path"]) for node in repository["assetNodes"]}
    assert {"raw_transactions", "validated_transactions", "champion_model"} <= assets
    # a websocket upgrade with the session reaches the webserver (101 Switching Protocols)
    host = stack.proxy_url.removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=30)
    connection.request(
        "GET",
        "/graphql",
        headers={
            "Cookie": f"_mlops_ui={cookie.value}",
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "graphql-ws",
        },
    )
    assert connection.getresponse().status == 101
    connection.close()
    # signing out ends the session
    session.get(f"{stack.proxy_url}/oauth2/sign_out", timeout=30, allow_redirects=False)
    assert _graphql(stack, session).status_code == 401


@pytest.mark.parametrize(
    ("email", "groups", "who"),
    [
        ("someone@gmail.example", [ANALYSTS], "another email domain"),
        ("marketer@bank.example", ["marketing"], "not in the analysts' group"),
    ],
)
def test_people_outside_the_allowed_domain_or_group_are_refused(
    stack: Stack, issuer: Issuer, email: str, groups: list[str], who: str
) -> None:
    issuer.login_email, issuer.login_groups = email, groups
    session, landing = _sign_in(stack)
    assert landing.status_code == 403, (who, landing.status_code)
    assert not _is_dagster_ui(landing), who
    assert _graphql(stack, session).status_code == 401, who


def test_a_callback_without_the_login_it_belongs_to_is_refused(stack: Stack) -> None:
    """A code or state from somewhere else (no CSRF cookie of this browser's login) is not a
    session."""
    response = requests.get(
        f"{stack.proxy_url}/oauth2/callback",
        params={"code": "stolen-code", "state": "abc:/"},
        timeout=30,
        allow_redirects=False,
    )
    assert response.status_code == 403
    assert "Set-Cookie" not in response.headers or "_mlops_ui=" not in response.headers.get(
        "Set-Cookie", ""
    ).replace("_mlops_ui_csrf", "")
