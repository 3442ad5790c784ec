"""deploy/kubernetes/ holds together: its settings load, its names and paths agree, its timings nest.

``make lint`` validates each manifest against the Kubernetes API schema (kubernetes-validate);
these tests check what a schema cannot: that the pieces fit each other and Gatehouse.
"""

import re
from pathlib import Path

import pytest
import yaml

from app.config.settings import load_settings

KIT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def manifest(name: str) -> dict:
    return yaml.safe_load((KIT / name).read_text())


@pytest.fixture
def pod():
    return manifest("deployment.yaml")["spec"]["template"]


@pytest.fixture
def settings(tmp_path, monkeypatch, pod):
    """The ConfigMap's file loaded as the pod loads it: env from the Deployment, secret files from the Secret."""
    secret = manifest("secret.yaml")["stringData"]
    container = pod["spec"]["containers"][0]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    volume = next(v for v in pod["spec"]["volumes"] if "secret" in v)
    for item in volume["secret"]["items"]:
        (secrets_dir / item["path"]).write_text(secret[item["key"]] + "\n")
    for env in container["env"]:
        if "valueFrom" in env:
            monkeypatch.setenv(env["name"], secret[env["valueFrom"]["secretKeyRef"]["key"]])
    config = tmp_path / "gatehouse.yaml"
    config.write_text(manifest("configmap.yaml")["data"]["gatehouse.yaml"])
    monkeypatch.setenv("GATEHOUSE_SECRETS_DIR", str(secrets_dir))
    return load_settings(config)


def test_configmap_settings_load_with_the_secrets_the_deployment_provides(settings):
    secret = manifest("secret.yaml")["stringData"]
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == secret["gatehouse_admin_token"]
    assert settings.redis_url is not None and settings.webhook_store.startswith("postgresql://")
    assert settings.webhooks[0].verify.secrets[0].get_secret_value() == secret["GITHUB_SECRET"]


def test_every_variable_in_the_configmap_is_set_by_the_deployment(pod):
    text = manifest("configmap.yaml")["data"]["gatehouse.yaml"]
    names = {env["name"] for env in pod["spec"]["containers"][0]["env"]}
    assert set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) <= names


def test_termination_grace_exceeds_drain_delay_plus_shutdown_grace(settings, pod):
    assert settings.drain_delay > 0
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.drain_delay + settings.shutdown_grace


def test_probes_and_metrics_use_the_ops_paths(settings, pod):
    container = pod["spec"]["containers"][0]
    ops = settings.ops_prefix
    assert container["livenessProbe"]["httpGet"]["path"] == f"{ops}/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == f"{ops}/readyz"
    assert manifest("servicemonitor.yaml")["spec"]["endpoints"][0]["path"] == f"{ops}/metrics"


def test_the_service_monitor_scrapes_with_the_metrics_token_the_pod_loads(settings):
    # On the public port /metrics needs a bearer token (ops exposure): the scrape sends metrics_token.
    endpoint = manifest("servicemonitor.yaml")["spec"]["endpoints"][0]
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    assert credentials["name"] == manifest("secret.yaml")["metadata"]["name"]
    assert settings.metrics_token is not None
    assert manifest("secret.yaml")["stringData"][credentials["key"]] == settings.metrics_token.get_secret_value()


def test_container_is_non_root_with_a_read_only_root_filesystem(pod):
    container = pod["spec"]["containers"][0]
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_selectors_ports_and_targets_agree(pod):
    labels = pod["metadata"]["labels"]
    ports = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
    service = manifest("service.yaml")
    assert service["spec"]["selector"].items() <= labels.items()
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports
    assert manifest("poddisruptionbudget.yaml")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    monitor = manifest("servicemonitor.yaml")["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] in {port["name"] for port in service["spec"]["ports"]}
    target = manifest("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", manifest("deployment.yaml")["metadata"]["name"])
