"""The streaming path's deployment files: the Kubernetes Job and Deployments validated against
the Kubernetes schema (strict) and checked against the real CLI, settings and metrics ports;
the Compose services with a KRaft broker and the registry the tests run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_assets.cli import build_parser
from mlops_assets.settings import Settings
from mlops_assets.stream.local_kafka import KAFKA_VERSION
from mlops_assets.stream.local_registry import APICURIO_VERSION, CONFLUENT_API

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
SETTINGS = {f"MLOPS_{name.upper()}" for name in Settings.model_fields}
COMMANDS = {
    "stream-setup": "_stream_setup",
    "bronze-ingestion": "_consume",
    "stream-scorer": "_score_stream",
}


def _docs() -> dict[str, dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all((DEPLOY / "k8s" / "stream.yaml").read_text()) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def _settings_from(env: dict[str, str]) -> Settings:
    assert set(env) <= SETTINGS, set(env) - SETTINGS
    return Settings.model_validate({k.removeprefix("MLOPS_").lower(): v for k, v in env.items()})


def test_stream_manifests_are_valid_kubernetes() -> None:
    docs = _docs()
    assert set(docs) == {
        "Job/stream-setup",
        "Deployment/bronze-ingestion",
        "Deployment/stream-scorer",
        "PodDisruptionBudget/stream-scorer",
    }
    for doc in docs.values():
        kubernetes_validate.validate(doc, "1.33", strict=True)
    budget = docs["PodDisruptionBudget/stream-scorer"]["spec"]["selector"]["matchLabels"]
    scorer = docs["Deployment/stream-scorer"]["spec"]["template"]["metadata"]["labels"]
    assert budget.items() <= scorer.items()


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_workload_runs_a_real_command_with_real_settings(name: str) -> None:
    kind = "Job" if name == "stream-setup" else "Deployment"
    pod = _docs()[f"{kind}/{name}"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = container["args"]
    assert args[0] == "mlops-assets"
    parsed = build_parser().parse_args(args[1:])
    assert parsed.handler.__name__ == COMMANDS[name]
    assert container["envFrom"] == [{"secretRef": {"name": "mlops-assets-env"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    settings = _settings_from(env)
    # secrets by reference: every *_FILE lies in the read-only mount of a Secret, and no
    # password is a plain value
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    files = [value for key, value in env.items() if key.endswith("_FILE")]
    assert files and settings.kafka_sasl_password_file in files
    for path in files:
        mount = next(m for m in mounts.values() if path.startswith(m["mountPath"] + "/"))
        assert mount["readOnly"] is True
        assert "secret" in volumes[mount["name"]], path
    assert not [k for k in env if "PASSWORD" in k and not k.endswith("_FILE")]
    # hardened: not root, read-only root filesystem (a writable /tmp), no privileges
    assert pod["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
    if kind == "Deployment":
        # the metrics endpoint the process serves is the port declared, probed and scraped
        port = settings.stream_metrics_port
        assert port > 0
        (declared,) = container["ports"]
        assert declared["containerPort"] == port
        assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}
        annotations = _docs()[f"{kind}/{name}"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(port)
        assert pod["terminationGracePeriodSeconds"] >= 30  # the last batch is written


def test_compose_runs_the_streaming_path_on_the_tested_versions() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    kafka = services["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # the broker the tests run
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    assert not any("ZOOKEEPER" in key for key in kafka["environment"])
    registry = services["schema-registry"]
    assert registry["image"].endswith(f":{APICURIO_VERSION}")
    internal_port = registry["ports"][0].split(":")[-1]  # [host:]published:container
    for name in COMMANDS:
        service = services[name]
        assert service["command"][0] == "mlops-assets"
        handler = build_parser().parse_args(service["command"][1:]).handler.__name__
        assert handler == COMMANDS[name]
        env = {k: str(v) for k, v in service["environment"].items()}
        settings = _settings_from(env)
        assert settings.kafka_bootstrap_servers == "kafka:9092"
        assert settings.schema_registry_url == (
            f"http://schema-registry:{internal_port}{CONFLUENT_API}"
        )
    for name in ("bronze-ingestion", "stream-scorer"):
        assert services[name]["depends_on"]["stream-setup"]["condition"] == (
            "service_completed_successfully"
        )
        assert "mlops-data:/opt/dagster/app" in services[name]["volumes"]  # the same lake
    assert services["mlops-assets"]["environment"]["MLOPS_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
