"""The monitoring configuration as Prometheus, Alertmanager and Kubernetes read it: the rules
pass `promtool check rules` and their unit tests (`promtool test rules`), every alert carries
severity, team and a runbook section that exists, the Alertmanager and Prometheus configs load,
the generated dashboards and manifests are current, and the monitors select the pods they are
meant to scrape."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mlops_assets.monitor.dashboards import dashboards, queries
from mlops_assets.monitor.pipeline_reading import FAMILIES
from mlops_assets.monitor.render import K8S_MONITORING, RULES, k8s_documents, rendered
from mlops_assets.serve.service_metrics import ServiceMetrics
from mlops_assets.serve.stream_metrics import ScorerMetrics
from mlops_assets.stream.metrics import IngestMetrics
from mlops_assets_tests.monitoring_servers import ALERTMANAGER_CONFIG, binary

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
TESTS = sorted((MONITORING / "prometheus" / "tests").glob("*.yaml"))
K8S_VERSION = "1.31.0"


def _run(*command: str) -> str:
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def _rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_rules_pass_promtool_check() -> None:
    assert "SUCCESS: 24 rules found" in _run(binary("promtool"), "check", "rules", str(RULES))


def test_the_rules_pass_their_unit_tests() -> None:
    assert TESTS
    output = _run(binary("promtool"), "test", "rules", *map(str, TESTS))
    assert output.count("SUCCESS") == len(TESTS)


def test_every_rule_has_a_unit_test_that_fires_it() -> None:
    tested = set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                if check["exp_alerts"]:
                    tested.add(check["alertname"])
    assert {rule["alert"] for rule in _rules()} == tested


def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: a latency threshold of 1 s no longer fires on 242 ms."""
    broken = RULES.read_text().replace(") > 0.1\n", ") > 1\n", 1)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "mlops-alerts.yaml").write_text(broken)
    (tmp_path / "tests").mkdir()
    test = MONITORING / "prometheus" / "tests" / "model-service.yaml"
    (tmp_path / "tests" / test.name).write_text(test.read_text())
    result = subprocess.run(
        [binary("promtool"), "test", "rules", str(tmp_path / "tests" / test.name)],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "ModelServiceHighLatency" in result.stdout + result.stderr


def test_every_alert_says_what_it_is_and_links_an_existing_runbook_section() -> None:
    runbook = (MONITORING / "runbook.md").read_text()
    anchors = {heading.strip().lower() for heading in re.findall(r"^## (.+)$", runbook, re.M)}
    for rule in _rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["labels"]["team"] == "fraud-ml" and rule["labels"]["family"], name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url = rule["annotations"]["runbook_url"]
        assert url.endswith(f"deploy/monitoring/runbook.md#{name.lower()}"), name
        assert name.lower() in anchors, f"runbook.md has no section '## {name}'"


def test_alertmanager_and_prometheus_configs_load(tmp_path: Path) -> None:
    _run(binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yaml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert {"model-service", "mlops-exporter", "bronze-ingestion", "stream-scorer"} <= jobs
    # the rule_files glob points at the Compose mount: check it against the real files
    config["rule_files"] = [str(RULES)]
    (tmp_path / "prometheus.yaml").write_text(yaml.safe_dump(config))
    assert "SUCCESS: 24 rules found" in _run(
        binary("promtool"), "check", "config", str(tmp_path / "prometheus.yaml")
    )


def _receivers(*labels: str) -> list[str]:
    """The receivers amtool's route test gives an alert with ``labels`` under the real config."""
    output = _run(
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        *labels,
    )
    first = output.strip().splitlines()[0]  # a warning about --alertmanager.url may follow
    return sorted(first.split(","))


def test_critical_alerts_page_and_warnings_go_to_the_channel() -> None:
    critical = _receivers("severity=critical", "team=fraud-ml", "alertname=ModelServiceDown")
    assert critical == ["oncall-pager", "team-channel"]
    warning = _receivers("severity=warning", "team=fraud-ml", "alertname=DailyAssetStale")
    assert warning == ["team-channel"]


def test_the_generated_files_are_current() -> None:
    stale = [
        str(path.relative_to(ROOT))
        for path, content in rendered().items()
        if not path.exists() or path.read_text() != content
    ]
    assert not stale, f"run `mlops-assets render-monitoring`: {stale} differ from their sources"


def test_the_prometheus_rule_holds_the_same_rules(tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all(K8S_MONITORING.read_text()))
    (rule,) = [d for d in documents if d["kind"] == "PrometheusRule"]
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(rule["spec"]))
    _run(binary("promtool"), "check", "rules", str(tmp_path / "spec.yaml"))


def _pods(path: Path) -> dict[str, dict[str, Any]]:
    """Pod templates of the Deployments of a manifest file, by name."""
    return {
        d["metadata"]["name"]: d["spec"]["template"]
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "Deployment"
    }


def _port_names(template: dict[str, Any]) -> set[str]:
    return {p["name"] for c in template["spec"]["containers"] for p in c.get("ports", [])}


def test_the_monitors_select_the_pods_and_ports_they_scrape() -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for d in k8s_documents()}
    k8s = ROOT / "deploy" / "k8s"
    services = {
        d["metadata"]["name"]: d
        for path in (k8s / "model-service.yaml", K8S_MONITORING)
        for d in yaml.safe_load_all(path.read_text())
        if d and d["kind"] == "Service"
    }
    for name in ("model-service", "mlops-exporter"):
        monitor = documents[("ServiceMonitor", name)]
        service = services[name]
        labels = service["metadata"]["labels"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    pods = _pods(k8s / "stream.yaml")
    monitor = documents[("PodMonitor", "mlops-streaming")]
    (expression,) = monitor["spec"]["selector"]["matchExpressions"]
    for name in expression["values"]:
        template = pods[name]
        assert template["metadata"]["labels"][monitor["spec"]["jobLabel"]] == name
        assert monitor["spec"]["podMetricsEndpoints"][0]["port"] in _port_names(template)
    exporter = documents[("Deployment", "mlops-exporter")]["spec"]["template"]
    assert "metrics" in _port_names(exporter)
    container = exporter["spec"]["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert exporter["spec"]["securityContext"]["runAsNonRoot"] is True


def test_the_core_kinds_are_valid_kubernetes() -> None:
    for document in k8s_documents():
        if document["apiVersion"].startswith("monitoring.coreos.com"):
            continue  # CRDs: checked above (selectors, ports) and by promtool (the rules)
        kubernetes_validate.validate(document, K8S_VERSION, strict=True)


def exported_metric_names() -> set[str]:
    """Every sample name the platform's registries and the exporter can serve."""
    names = {"up"}
    registries = [ServiceMetrics().registry, IngestMetrics().registry, ScorerMetrics().registry]
    for registry in registries:
        for family in registry.collect():
            kind = family.type
            base = family.name
            names.add(base)
            if kind == "counter":
                names.add(f"{base}_total")
            if kind == "histogram":
                names.update({f"{base}_bucket", f"{base}_count", f"{base}_sum"})
    names.update(FAMILIES)
    names.update(
        {
            "mlops_exporter_last_refresh_failed",
            "mlops_exporter_last_success_timestamp_seconds",
            "mlops_exporter_refresh_seconds",
            "mlops_exporter_refresh_failures",
        }
    )
    return names


_FUNCTIONS = {
    "sum", "rate", "increase", "histogram_quantile", "by", "time", "max", "min", "and", "or",
    "unless", "on", "ignoring", "group_left", "absent", "le", "count", "avg", "without", "bool",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (identifiers outside braces and quotes that are
    not functions, keywords or grouping labels)."""
    without_strings = re.sub(r'"[^"]*"', "", expr)
    without_selectors = re.sub(r"\{[^}]*\}", "", without_strings)
    without_grouping = re.sub(r"\b(by|on|ignoring|without)\s*\([^)]*\)", "", without_selectors)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    without_offsets = re.sub(r"\boffset\s+\d+[smhdwy]", "", without_ranges)
    tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_offsets))
    return {t for t in tokens if t not in _FUNCTIONS}


def test_every_dashboard_query_reads_metrics_the_platform_exports() -> None:
    exported = exported_metric_names()
    for name, dashboard in dashboards().items():
        assert dashboard["panels"], name
        for expr in queries(dashboard):
            read = metric_names(expr)
            assert read, expr
            assert read <= exported, f"{name}: {expr} reads {sorted(read - exported)}"
    for rule in _rules():
        assert metric_names(rule["expr"]) <= exported, rule["alert"]


def test_the_provisioning_points_grafana_at_the_dashboards() -> None:
    provider = yaml.safe_load(
        (MONITORING / "grafana" / "provisioning" / "dashboards" / "mlops.yaml").read_text()
    )
    (entry,) = provider["providers"]
    assert entry["options"]["path"] == "/var/lib/grafana/dashboards"
    for path in (MONITORING / "grafana" / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["panels"]


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (le) (rate(x_bucket{a="b", endpoint=~"/p|/q"}[5m]))', {"x_bucket"}),
        ("time() - y_seconds > on (job, sensor) z_seconds", {"y_seconds", "z_seconds"}),
        ("histogram_quantile(0.95, sum by (job, le) (rate(w_bucket[1m])))", {"w_bucket"}),
        (
            "(increase(v_total[1h]) > 0) or (v_total unless u_total offset 1h)",
            {"v_total", "u_total"},
        ),
    ],
)
def test_metric_names_reads_the_metrics_only(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
