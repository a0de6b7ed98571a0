"""The deployment files parse, agree with each other and with the services' real config schema.

Docker cannot run here, so compose and Kubernetes files are checked structurally: every
FRAUDFL_* variable is a real config setting, every config file validates against the config
models, metrics ports agree between services, Prometheus targets and annotations, and the topic
scripts create exactly the topics of ``fraudfl.transport.topics.TopicLayout``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from fraudfl.config import AggregatorConfig, BankNodeConfig, ServiceConfig
from fraudfl.transport.topics import TopicLayout

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def is_setting(model: type[BaseModel], dotted: tuple[str, ...]) -> bool:
    for i, key in enumerate(dotted):
        field = model.model_fields.get(key)
        if field is None:
            return False
        if i < len(dotted) - 1:
            sub = field.annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                return False
            model = sub
    return True


def env_setting(name: str) -> tuple[str, ...]:
    assert name.startswith("FRAUDFL_"), name
    return tuple(k.lower() for k in name[len("FRAUDFL_") :].split("__"))


def test_every_yaml_file_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.yml")) + sorted(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 15
    for path in files:
        assert load_all(path), path
    for path in (DEPLOY / "grafana/dashboards").glob("*.json"):
        json.loads(path.read_text())


# --- docker compose ------------------------------------------------------------------------

COMPOSE = load(DEPLOY / "docker-compose.yml")
OVERLAY = load(DEPLOY / "docker-compose.sasl-ssl.yml")
SERVICES = COMPOSE["services"]
FRAUDFL_SERVICES = {"aggregator": AggregatorConfig} | {
    f"bank-{i}": BankNodeConfig for i in (1, 2, 3)
}


def test_compose_has_kraft_kafka_and_the_whole_federation() -> None:
    assert set(SERVICES) == {
        "kafka", "kafka-init", "fraudfl-init", "aggregator", "bank-1", "bank-2", "bank-3",
        "prometheus", "grafana",
    }
    kafka = SERVICES["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@kafka:9093"
    assert not any("ZOOKEEPER" in key for key in env)
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    for name in FRAUDFL_SERVICES:
        depends = SERVICES[name]["depends_on"]
        assert depends["kafka-init"]["condition"] == "service_completed_successfully"
        assert depends["fraudfl-init"]["condition"] == "service_completed_successfully"
        assert SERVICES[name]["build"]["context"] == ".."


def test_compose_commands_and_env_match_the_services_cli_and_config() -> None:
    init = " ".join(SERVICES["fraudfl-init"]["command"])
    assert "fraudfl init /federation --banks 3 --federation-id consortium" in init
    for name, model in FRAUDFL_SERVICES.items():
        service = SERVICES[name]
        subcommand = "aggregator" if model is AggregatorConfig else "bank-node"
        assert service["command"][:2] == [subcommand, "--config"]
        assert service["command"][2].startswith("/federation/")
        for variable in service["environment"]:
            assert is_setting(model, env_setting(variable)), (name, variable)
    for name, service in OVERLAY["services"].items():
        assert name in SERVICES
        if name in FRAUDFL_SERVICES:
            for variable in service["environment"]:
                assert is_setting(FRAUDFL_SERVICES[name], env_setting(variable)), variable
            assert service["secrets"] == ["kafka-ca"]
            assert service["environment"]["FRAUDFL_KAFKA__SECURITY_PROTOCOL"] == "SASL_SSL"


def test_bank_configs_are_the_banks_fraudfl_init_writes_and_kafka_init_creates() -> None:
    banks = SERVICES["kafka-init"]["environment"]["BANKS"].split()
    configs = [SERVICES[f"bank-{i}"]["command"][2] for i in (1, 2, 3)]
    # fraudfl init names banks bank_00.. (fraudfl.data.generators.banks) and writes banks/<id>.toml
    assert banks == ["bank_00", "bank_01", "bank_02"]
    assert configs == [f"/federation/banks/{b}.toml" for b in banks]
    assert SERVICES["kafka-init"]["environment"]["FEDERATION"] == "consortium"


def test_prometheus_targets_are_the_services_metrics_ports() -> None:
    prometheus = load(DEPLOY / "prometheus/prometheus.yml")
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prometheus["scrape_configs"]
    }
    ports = {n: SERVICES[n]["environment"]["FRAUDFL_METRICS_PORT"] for n in FRAUDFL_SERVICES}
    assert targets["fraudfl-aggregator"] == [f"aggregator:{ports['aggregator']}"]
    assert targets["fraudfl-bank"] == [f"bank-{i}:{ports[f'bank-{i}']}" for i in (1, 2, 3)]
    assert ports == {"aggregator": 9100, "bank-1": 9101, "bank-2": 9102, "bank-3": 9103}
    for name in FRAUDFL_SERVICES:
        assert SERVICES[name]["expose"] == [str(ports[name])]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./prometheus:/etc/prometheus:ro" in mounts


def test_grafana_provisioning_matches_the_compose_mounts() -> None:
    grafana = SERVICES["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    providers = load(DEPLOY / "grafana/provisioning/dashboards/dashboards.yml")["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = load(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"][0]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana/dashboards" / Path(home).name).is_file()


# --- topics --------------------------------------------------------------------------------


def run_topic_script(
    tmp_path: Path, script: list[str], env: dict[str, str]
) -> set[tuple[str, int]]:
    """Run a topic-creation script against a stub kafka-topics.sh that records its calls."""
    log = tmp_path / "calls"
    stub = tmp_path / "kafka-topics.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    subprocess.run(
        script, env={**os.environ, **env, "KAFKA_TOPICS": str(stub)}, check=True, timeout=30,
        capture_output=True,
    )
    created = set()
    for line in log.read_text().splitlines():
        args = line.split()
        if "--create" in args:
            topic = args[args.index("--topic") + 1]
            partitions = int(args[args.index("--partitions") + 1])
            created.add((topic, partitions))
    return created


def expected_topics(federation: str, banks: list[str]) -> set[tuple[str, int]]:
    return {(s.name, s.partitions) for s in TopicLayout(federation).specs(banks)}


def test_compose_topic_script_creates_the_federation_topics(tmp_path: Path) -> None:
    env = SERVICES["kafka-init"]["environment"]
    created = run_topic_script(
        tmp_path,
        ["bash", str(DEPLOY / "kafka/create-topics.sh"), "kafka:9092"],
        {"FEDERATION": env["FEDERATION"], "BANKS": env["BANKS"]},
    )
    assert created == expected_topics(env["FEDERATION"], env["BANKS"].split())


def test_k8s_topic_job_creates_the_federation_topics(tmp_path: Path) -> None:
    (job,) = load_all(K8S / "kafka-topics-job.yaml")
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in container["env"]}
    created = run_topic_script(tmp_path, [*container["command"], container["args"][0]], env)
    assert created == expected_topics(env["FEDERATION"], env["BANKS"].split())


# --- Kubernetes ----------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    kustomization = load(K8S / "kustomization.yaml")
    return [doc for name in kustomization["resources"] for doc in load_all(K8S / name)]


def workloads() -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in k8s_objects()
        if o["kind"] in ("Deployment", "StatefulSet")
    }


def test_k8s_config_files_validate_against_the_config_models() -> None:
    aggregator = AggregatorConfig.model_validate(
        tomllib.loads((K8S / "config/aggregator.toml").read_text())
    )
    banks = [
        BankNodeConfig.model_validate(tomllib.loads((K8S / f"config/bank-{i}.toml").read_text()))
        for i in range(3)
    ]
    configs: list[ServiceConfig] = [aggregator, *banks]
    assert {c.federation_id for c in configs} == {"consortium"}
    assert [b.bank_id for b in banks] == ["bank_00", "bank_01", "bank_02"]
    assert {c.metrics_port for c in configs} == {9100}
    assert {c.kafka.bootstrap_servers for c in configs} == {"kafka.fraudfl.svc.cluster.local:9092"}
    for c in configs:
        # Keys are installed by the init containers at these paths.
        assert str(c.identity_key) == "/var/lib/fraudfl/keys/identity.key"
        assert str(c.encryption_key) == "/var/lib/fraudfl/keys/encryption.key"
    (job,) = load_all(K8S / "kafka-topics-job.yaml")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BANKS"].split() == [b.bank_id for b in banks]


def test_k8s_selectors_ports_and_annotations_agree() -> None:
    objects = k8s_objects()
    loads = workloads()
    assert set(loads) == {"kafka", "fraudfl-aggregator", "bank"}
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in loads.values()]
    for workload in loads.values():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), service
    for name in ("fraudfl-aggregator", "bank"):
        template = loads[name]["spec"]["template"]
        container = template["spec"]["containers"][0]
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        assert port["containerPort"] == 9100
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9100"
        assert container["readinessProbe"]["httpGet"]["path"] == "/metrics"
        security = template["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
    assert loads["fraudfl-aggregator"]["spec"]["replicas"] == 1
    assert loads["fraudfl-aggregator"]["spec"]["strategy"]["type"] == "Recreate"
    kafka_env = {
        e["name"]: e.get("value")
        for e in loads["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_k8s_bank_pods_each_have_a_config() -> None:
    bank = workloads()["bank"]
    kustomization = load(K8S / "kustomization.yaml")
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "fraudfl-bank-config"
    ]
    names = sorted(Path(f).stem for f in generator["files"])
    # StatefulSet pods are <name>-<ordinal>; each reads /etc/fraudfl/config/<pod>.toml.
    assert names == [f"bank-{i}" for i in range(bank["spec"]["replicas"])]
    assert bank["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "state"


def test_servicemonitors_name_the_jobs_the_alerts_expect() -> None:
    services = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Service"}
    monitors = load_all(K8S / "monitoring/servicemonitors.yaml")
    rules = (DEPLOY / "prometheus/rules/fraudfl.rules.yml").read_text()
    assert 'job=~"fraudfl-.*"' in rules
    for monitor in monitors:
        # Without a jobLabel the Operator names the job after the Service.
        (service,) = [
            s for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items()
            <= s["metadata"]["labels"].items()
        ]
        assert re.fullmatch("fraudfl-.*", service["metadata"]["name"])
        port_names = {p["name"] for p in service["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in port_names


def test_prometheusrule_equals_the_rules_file() -> None:
    (rule,) = load_all(K8S / "monitoring/prometheusrule.yaml")
    assert rule["spec"] == load(DEPLOY / "prometheus/rules/fraudfl.rules.yml")


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed: `kubectl kustomize` build not checked")
    for directory in (K8S, K8S / "monitoring"):
        result = subprocess.run(
            [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        kinds = [d["kind"] for d in yaml.safe_load_all(result.stdout)]
        assert kinds


# --- image ---------------------------------------------------------------------------------


def test_dockerfile_installs_cpu_torch_and_runs_unprivileged() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms == ["python:3.11-slim", "python:3.11-slim"]
    assert (
        "pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    )
    assert "-c constraints.txt" in text
    assert re.search(r"^USER 10001", text, re.M)
    assert 'ENTRYPOINT ["fraudfl"]' in text
    for copied in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in copied.split():
            assert (ROOT / path).exists(), path
    ignore = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ignore[0] == "*"
    assert {"!fraudfl", "!aggregator", "!bank_node", "!pyproject.toml", "!constraints.txt"} <= set(
        ignore
    )
