"""No real-looking secret in the repository's files, the defaults, or what Dagster shows.

The scan reads every tracked text file (``git ls-files``; the working tree's files when this
is not a git checkout) for AWS access key ids, private key blocks, Slack webhook URLs and long
high-entropy values assigned to password/secret/token/key names in config files.
"""

from __future__ import annotations

import math
import re
import subprocess
from collections import Counter
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIG_SUFFIXES = {".yaml", ".yml", ".toml", ".env", ".ini", ".cfg", ".conf", ".json"}

AWS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
PRIVATE_KEY = re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
SLACK_WEBHOOK = re.compile(
    r"hooks\.slack\.com/services/T[0-9A-Z]{6,}/B[0-9A-Z]{6,}/[0-9A-Za-z]{16,}"
)
ASSIGNED_SECRET = re.compile(
    r"""(?ix)(?P<name>[\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key
    |private[_-]?key)[\w.-]*)["']?\s*[:=]\s*["']?(?P<value>[A-Za-z0-9+/_\-.=]{20,})"""
)
#: names that hold a reference (a Secret's name, a mounted file), not the secret itself
REFERENCE_NAME = re.compile(r"(?i)(name|file|ref|path|dir)$")

#: (path, the matched text): obviously fake values of test fixtures, each documented
ALLOWED: dict[tuple[str, str], str] = {}


def _tracked_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout.decode()
        paths = [ROOT / p for p in listed.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", ".tools", ".mlops", "node_modules", "__pycache__"}
        paths = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]
    return [p for p in paths if p.is_file()]


def _entropy(value: str) -> float:
    counts = Counter(value)
    return -sum(n / len(value) * math.log2(n / len(value)) for n in counts.values())


def _findings(path: Path, text: str) -> list[str]:
    found = [m.group(0) for m in AWS_KEY_ID.finditer(text)]
    found += [m.group(0) for m in PRIVATE_KEY.finditer(text)]
    found += [m.group(0) for m in SLACK_WEBHOOK.finditer(text)]
    if path.suffix in CONFIG_SUFFIXES or path.name.startswith((".env", "compose")):
        for match in ASSIGNED_SECRET.finditer(text):
            value = match.group("value")
            if REFERENCE_NAME.search(match.group("name")) or value.startswith("/"):
                continue
            mixed = re.search(r"\d", value) and re.search(r"[A-Za-z]", value)
            if mixed and _entropy(value) >= 3.5:
                found.append(match.group(0))
    rel = str(path.relative_to(ROOT))
    return [f for f in found if (rel, f) not in ALLOWED]


def test_no_real_looking_secret_in_tracked_files() -> None:
    files = _tracked_files()
    assert len(files) > 50
    problems = {}
    for path in files:
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        if found := _findings(path, text):
            problems[str(path.relative_to(ROOT))] = found
    assert not problems, problems


def test_the_scanner_finds_real_looking_secrets(tmp_path: Path) -> None:
    # built at run time so this file itself holds no real-looking secret
    key_id = "AKIA" + "Q7ZP2K4M8X1N3B5V"
    webhook = "hooks.slack.com/services/" + "T0A1B2C3D/B9Z8Y7X6W/" + "q8Hf2LmZ0pR4sT6vX1yB3nC5"
    config = tmp_path / "values.yaml"
    config.write_text(
        f"aws: {key_id}\nurl: https://{webhook}\n"
        f"postgresqlPassword: {'kJ8s' + 'Qz2Lp9Xv4Rt7Nw1Ym6'}\nplain_password: changeme\n"
    )
    pem = tmp_path / "key.pem"
    pem.write_text("-----BEGIN " + "RSA PRIVATE KEY-----\n...\n")
    root = ROOT
    try:
        globals()["ROOT"] = tmp_path
        assert len(_findings(config, config.read_text())) == 3
        assert len(_findings(pem, pem.read_text())) == 1
    finally:
        globals()["ROOT"] = root


# ---------------------------------------------------------------- settings and resources

WEBHOOK = "https://hooks.example.invalid/services/webhook-secret-7f3a9c"
PG_PASSWORD = "pg-secret-9d2e41"
OPTUNA_URI = f"postgresql+psycopg2://optuna:{PG_PASSWORD}@postgres.invalid:5432/optuna"


def test_settings_defaults_hold_no_credential() -> None:
    from mlops_assets.settings import Settings

    references = {"k8s_env_secrets"}  # names of Kubernetes Secrets, not their values
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        credential_like = re.search(r"password|secret|token|webhook|api_key", name)
        if credential_like and name not in references and not name.endswith(("_file", "_env")):
            assert default in (None, ""), name
        if isinstance(default, str):
            assert not re.search(r"://[^/@\s]+:[^/@\s]+@", default), name  # user:password@
            assert not AWS_KEY_ID.search(default), name


@pytest.fixture
def secret_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from mlops_assets.settings import Settings

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLOPS_ALERT_WEBHOOK_URL", WEBHOOK)
    monkeypatch.setenv("MLOPS_OPTUNA_STORAGE_URI", OPTUNA_URI)
    settings = Settings()
    assert settings.alert_webhook_url == WEBHOOK  # really given through the settings
    return settings


def _leaks(text: str) -> list[str]:
    return [s for s in (WEBHOOK, "webhook-secret-7f3a9c", PG_PASSWORD) if s in text]


def test_secrets_never_in_the_repr_of_settings_or_resources(secret_settings) -> None:
    from mlops_assets.environment import build_resources

    assert not _leaks(repr(secret_settings)) and not _leaks(str(secret_settings))
    for name, resource in build_resources(secret_settings).items():
        assert not _leaks(repr(resource)), name


def test_secrets_never_in_what_dagster_shows(secret_settings) -> None:
    """The resources' configuration in the repository snapshot (what the UI shows): the
    secrets are ``dg.EnvVar`` references, by name only."""
    from dagster._core.remote_representation.external_data import RepositorySnap
    from dagster_shared.serdes import serialize_value

    from mlops_assets.environment import build_resources

    resources = build_resources(secret_settings)
    snap = serialize_value(
        RepositorySnap.from_def(dg.Definitions(resources=resources).get_repository_def())
    )
    assert not _leaks(snap)
    assert "MLOPS_ALERT_WEBHOOK_URL" in snap and "MLOPS_OPTUNA_STORAGE_URI" in snap
