"""The Helm chart, rendered by the real Helm engine and checked against Kubernetes schemas."""

from __future__ import annotations

import json
import math
import re
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from payments_service.config import Settings
from tests.support.chart import (
    CHART,
    KIND_VALUES,
    KUBE_VERSIONS,
    SCENARIOS,
    container_env,
    deep_merge,
    helm,
    load_values,
    manifests,
    objects_of,
    pod_specs,
    render,
    rendered_settings,
    single_object,
)
from tests.support.environment import ROOT

pytestmark = pytest.mark.tools

#: Custom resources (Prometheus Operator, Gateway API): no built-in schema to validate against.
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "GRPCRoute"}

POSTGRES = {"storage": {"backend": "postgres", "postgres": {"existingSecret": "db"}}}
TLS = {"tls": {"enabled": True, "secretName": "tls"}}
TLS_DIR = "/etc/payments-service/tls"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def scenario_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


ALL_VALUES = [*SCENARIOS, *KIND_VALUES]


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_lint_reports_no_warning_or_error(values_file: Path) -> None:
    report = helm().lint(CHART, load_values(values_file), strict=True, kube_version="v1.31.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [], report
    assert problems == [], report


def test_values_schema_is_draft_07_and_closed_everywhere() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"

    def closed(node: dict[str, Any], path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, child in node["properties"].items():
                closed(child, f"{path}.{key}")

    closed(schema, "values")
    for name, definition in schema["definitions"].items():
        closed(definition, f"definitions.{name}")


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_scenario_renders_objects_valid_for_kubernetes(values_file: Path) -> None:
    import kubernetes_validate

    objects = manifests(render(load_values(values_file)))
    assert {"Deployment", "Service", "ConfigMap"} <= {o["kind"] for o in objects}
    for obj in objects:
        if obj["kind"] in CUSTOM_KINDS:
            assert obj["apiVersion"].endswith(".coreos.com/v1") or obj["apiVersion"] == (
                "gateway.networking.k8s.io/v1"
            )
            assert obj["spec"]
            continue
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)


def test_production_scenario_turns_every_option_on() -> None:
    values = load_values(CHART / "ci" / "production-values.yaml")
    objects = manifests(render(values))
    kinds = {o["kind"] for o in objects}
    assert {
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    } <= kinds
    env = container_env(objects)
    assert env["REFLECTION_ENABLED"] == "false"
    assert env["STORAGE_BACKEND"] == "postgres"
    assert env["TLS_CLIENT_CA_FILE"] == f"{TLS_DIR}/ca.crt"
    assert env["OTEL_SDK_DISABLED"] == "false"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCont": 2}, "additional properties 'replicaCont' not allowed"),
        ({"config": {"logLevle": "DEBUG"}}, "additional properties 'logLevle' not allowed"),
        ({"replicaCount": "three"}, "/replicaCount"),
        ({"config": {"logLevel": "LOUD"}}, "/config/logLevel"),
        ({"ports": {"grpc": 70000}}, "/ports/grpc"),
        ({"replicaCount": 3}, "needs storage.backend=postgres"),
        ({"autoscaling": {"enabled": True}}, "needs storage.backend=postgres"),
        ({"storage": {"backend": "postgres"}}, "needs storage.postgres.existingSecret"),
        ({"tls": {"enabled": True}}, "tls.enabled=true needs tls.secretName"),
        ({"tls": {"mutual": True}}, "tls.mutual=true needs tls.enabled=true"),
        ({"podDisruptionBudget": {"enabled": True}}, "would block every node drain"),
        ({"ports": {"health": 7000}}, "ports.health=7000 must differ from ports.grpc=7000"),
        ({"ports": {"health": 9464}}, "ports.health=9464 must differ"),
        (deep_merge(TLS, {"ports": {"grpc": 7001}}), "ports.health=7001 must differ"),
    ],
)
def test_invalid_values_are_rejected_with_a_readable_message(
    values: dict[str, Any], message: str
) -> None:
    errors = helm()
    with pytest.raises((errors.HelmValuesError, errors.HelmRenderError)) as raised:
        render(values)
    assert message in str(raised.value)


def test_several_replicas_are_allowed_with_postgres() -> None:
    objects = manifests(render(deep_merge(POSTGRES, {"replicaCount": 3})))
    assert single_object(objects, "Deployment")["spec"]["replicas"] == 3


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_every_pod_meets_the_restricted_pod_security_standard(values_file: Path) -> None:
    objects = manifests(render(load_values(values_file)))
    for name, spec in pod_specs(objects):
        pod_context = spec.get("securityContext", {})
        assert pod_context.get("runAsNonRoot") is True, name
        assert pod_context.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
        assert spec.get("automountServiceAccountToken") is False, name
        assert not spec.get("hostNetwork"), name
        assert not spec.get("hostPID"), name
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            context = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            # runAsUser may be left to the platform (OpenShift assigns one): never root.
            assert context["runAsNonRoot"] is True, where
            assert context.get("runAsUser", 1) > 0, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["seccompProfile"]["type"] == "RuntimeDefault", where
            assert container["resources"]["requests"], where
            assert container["resources"]["limits"], where
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert tmp, f"{where}: a read-only root needs an emptyDir on /tmp"


def test_service_account_never_mounts_a_token() -> None:
    objects = manifests(render())
    assert single_object(objects, "ServiceAccount")["automountServiceAccountToken"] is False


def test_service_names_grpc_and_metrics_ports() -> None:
    services = {s["metadata"]["name"]: s for s in objects_of(manifests(render()), "Service")}
    ports = {p["name"]: p for p in services["payments-service"]["spec"]["ports"]}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["targetPort"] == "grpc"
    internal = {p["name"]: p for p in services["payments-service-internal"]["spec"]["ports"]}
    assert internal["metrics"]["targetPort"] == "metrics"


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_probes_are_native_grpc_on_the_health_port_with_or_without_tls(tls: bool) -> None:
    """All three probes ask the health-only port, never the API port: there they would
    queue behind API calls or be refused with them (MAX_CONCURRENT_RPCS) under a burst."""
    values = deep_merge(TLS if tls else {}, {"ports": {"health": 7101}})
    objects = manifests(render(values))
    (container,) = single_object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["startupProbe"]["grpc"] == {"port": 7101, "service": ""}
    assert container["livenessProbe"]["grpc"] == {"port": 7101, "service": ""}
    assert container["readinessProbe"]["grpc"] == {
        "port": 7101,
        "service": "payments.v1.PaymentService",
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": 7000, "metrics": 9464, "health": 7101}
    env = container_env(objects)
    assert env["PORT"] == "7000"
    assert env["HEALTH_PORT"] == "7101"
    if tls:
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["tls"]["mountPath"] == TLS_DIR
        assert mounts["tls"]["readOnly"] is True
    else:
        assert "TLS_CERT_FILE" not in env


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_every_scenario_probes_the_health_port_it_opens(values_file: Path) -> None:
    values = load_values(values_file)
    objects = manifests(render(values))
    (container,) = single_object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probed = {container[probe]["grpc"]["port"] for probe in PROBES}
    assert probed == {ports["health"]}
    assert ports["health"] != ports["grpc"]
    assert container_env(objects)["HEALTH_PORT"] == str(ports["health"])


#: After GRACE_PERIOD_SECONDS the server exits within this many seconds of SIGTERM (the
#: readiness monitor's last database check and the tracer's flush are bounded inside them).
SERVER_SHUTDOWN_BOUND = 5


@pytest.mark.parametrize(("pause", "grace"), [(5, 0), (5, 5), (5, 7.5), (5, 30), (0, 5), (12, 2)])
def test_termination_grace_period_covers_prestop_grace_and_the_servers_bound(
    pause: int, grace: float
) -> None:
    values = {"config": {"gracePeriodSeconds": grace}, "lifecycle": {"preStopSleepSeconds": pause}}
    objects = manifests(render(values))
    spec = single_object(objects, "Deployment")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    hook = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    assert hook == pause
    assert spec["terminationGracePeriodSeconds"] == pause + math.ceil(grace) + SERVER_SHUTDOWN_BOUND
    assert container_env(objects)["GRACE_PERIOD_SECONDS"] == str(grace).removesuffix(".0")


def test_a_margin_shorter_than_the_servers_shutdown_bound_is_refused() -> None:
    """With 1 s the kubelet's SIGKILL could land while the server still flushes its spans."""
    with pytest.raises(helm().HelmValuesError, match="terminationMarginSeconds"):
        render({"lifecycle": {"terminationMarginSeconds": 1}})


def test_config_checksum_changes_with_the_config() -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = single_object(manifests(render(values)), "Deployment")
        return str(deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum({}) == checksum({})
    assert checksum({}) != checksum({"config": {"logLevel": "DEBUG"}})


def test_resource_attributes_carry_the_pod_from_the_downward_api() -> None:
    deployment = single_object(manifests(render({"tracing": {"enabled": True}})), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {item["name"]: item for item in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    names = list(env)
    # $(VAR) references only expand to variables defined earlier in the list.
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert "k8s.pod.name=$(POD_NAME)" in attributes
    assert "k8s.namespace.name=$(POD_NAMESPACE)" in attributes


def test_database_url_comes_from_the_existing_secret_only() -> None:
    objects = manifests(render(POSTGRES))
    env = container_env(objects)
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "database-url"}}
    for configmap in objects_of(objects, "ConfigMap"):
        assert "DATABASE_URL" not in configmap.get("data", {})
    spec = single_object(objects, "Deployment")["spec"]["template"]["spec"]
    (migrate,) = spec["initContainers"]
    assert migrate["args"] == ["migrate"]
    assert migrate["command"] == spec["containers"][0]["command"]


def test_network_policy_egress_is_dns_otlp_and_database_only() -> None:
    values = deep_merge(
        POSTGRES, {"networkPolicy": {"enabled": True}, "tracing": {"enabled": True}}
    )
    policy = single_object(manifests(render(values), with_tests=False), "NetworkPolicy")
    egress_ports = sorted(
        (port["port"], port["protocol"])
        for rule in policy["spec"]["egress"]
        for port in rule["ports"]
    )
    assert egress_ports == [(53, "TCP"), (53, "UDP"), (4317, "TCP"), (5432, "TCP")]
    ingress_ports = sorted(
        port["port"] for rule in policy["spec"]["ingress"] for port in rule["ports"]
    )
    assert ingress_ports == ["grpc", "metrics"]


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_network_policy_opens_the_health_port_to_other_pods_only_under_tls(tls: bool) -> None:
    """The kubelet probes from the node, which a policy does not filter: the health port
    needs no rule for it. Pods get it only under TLS (helm test's plaintext check)."""
    values = deep_merge(TLS if tls else {}, {"networkPolicy": {"enabled": True}})
    objects = manifests(render(values), with_tests=False)
    peers = {
        port["port"]: rule["from"]
        for rule in single_object(objects, "NetworkPolicy")["spec"]["ingress"]
        for port in rule["ports"]
    }
    (container,) = single_object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert "health" in {p["name"] for p in container["ports"]}
    if tls:
        assert peers["health"] == peers["grpc"] == [{"podSelector": {}}]
    else:
        assert set(peers) == {"grpc", "metrics"}


def test_alerts_and_dashboard_come_from_the_shared_files() -> None:
    values = {
        "metrics": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}},
    }
    objects = manifests(render(values))
    rules = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())
    rendered = single_object(objects, "PrometheusRule")["spec"]["groups"]
    for group in rendered:  # the one change: absent() watches the release's namespace
        for rule in group["rules"]:
            rule["expr"] = rule["expr"].replace('{namespace="payments"}', "")
    assert rendered == rules["groups"]
    dashboards = [
        cm for cm in objects_of(objects, "ConfigMap") if "dashboard" in cm["metadata"]["name"]
    ]
    (dashboard,) = dashboards
    expected = json.loads((CHART / "files" / "dashboard.json").read_text())
    shipped = json.loads(dashboard["data"]["payments-service.json"])
    assert shipped["panels"] == expected["panels"]


def test_notes_print_working_commands_for_the_release() -> None:
    notes = render()["payments-service/templates/NOTES.txt"]
    assert "kubectl -n payments port-forward service/payments-service 7000:7000" in notes
    assert "grpcurl -plaintext localhost:7000 grpc.health.v1.Health/Check" in notes
    production = render(load_values(CHART / "ci" / "production-values.yaml"))
    assert "-proto payments.proto" in production["payments-service/templates/NOTES.txt"]


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_only_the_server_pods_match_the_selectors(values_file: Path) -> None:
    """The test pod must not become a Service endpoint, nor fall under the PDB or policy."""
    rendered = render(load_values(values_file))
    objects = manifests(rendered, with_tests=False)
    selector = single_object(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    selectors = [selector, *(s["spec"]["selector"] for s in objects_of(objects, "Service"))]
    selectors += [
        o["spec"]["selector"]["matchLabels"] for o in objects_of(objects, "PodDisruptionBudget")
    ]
    selectors += [
        o["spec"]["podSelector"]["matchLabels"] for o in objects_of(objects, "NetworkPolicy")
    ]
    for pod in objects_of(manifests(rendered), "Pod"):
        labels = pod["metadata"]["labels"]
        for wanted in selectors:
            assert not wanted.items() <= labels.items(), pod["metadata"]["name"]


def test_helm_test_pod_has_its_own_network_policy() -> None:
    objects = manifests(render({"networkPolicy": {"enabled": True}}))
    (pod,) = objects_of(objects, "Pod")
    policies = {p["metadata"]["name"]: p for p in objects_of(objects, "NetworkPolicy")}
    policy = policies[pod["metadata"]["name"]]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    egress_ports = sorted(p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"])
    assert egress_ports == [53, 53, 7000]


def test_helm_test_pod_runs_the_cli_against_the_service() -> None:
    (pod,) = objects_of(manifests(render()), "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "payments-client --target payments-service:7000 health" in script
    assert "payments-client --target payments-service:7000 get" in script


# --- every setting of the service is reachable from the chart's values ----------------------

#: Settings the chart derives from structured values instead of a config.* key:
#: field -> (values that set it, the variable's expected value).
DERIVED: dict[str, tuple[dict[str, Any], Any]] = {
    "port": ({"ports": {"grpc": 7100}}, "7100"),
    "metrics_port": ({"ports": {"metrics": 9500}}, "9500"),
    "storage_backend": (POSTGRES, "postgres"),
    "database_url": (POSTGRES, {"secretKeyRef": {"name": "db", "key": "database-url"}}),
    "database_pool_min_size": (
        deep_merge(POSTGRES, {"storage": {"postgres": {"poolMinSize": 3}}}),
        "3",
    ),
    "database_pool_max_size": (
        deep_merge(POSTGRES, {"storage": {"postgres": {"poolMaxSize": 7}}}),
        "7",
    ),
    "database_timeout_seconds": (
        deep_merge(POSTGRES, {"storage": {"postgres": {"timeoutSeconds": 2.5}}}),
        "2.5",
    ),
    "migrate_on_startup": (
        deep_merge(POSTGRES, {"storage": {"postgres": {"migrateOnStartup": True}}}),
        "true",
    ),
    "tls_cert_file": (TLS, f"{TLS_DIR}/tls.crt"),
    "tls_key_file": (TLS, f"{TLS_DIR}/tls.key"),
    "tls_client_ca_file": (deep_merge(TLS, {"tls": {"mutual": True}}), f"{TLS_DIR}/ca.crt"),
    "health_port": ({"ports": {"health": 7200}}, "7200"),
    "otel_sdk_disabled": ({"tracing": {"enabled": False}}, "true"),
    "otel_service_name": ({"tracing": {"serviceName": "payments-eu"}}, "payments-eu"),
    "otel_exporter_otlp_endpoint": (
        {"tracing": {"enabled": True, "endpoint": "http://collector:4317"}},
        "http://collector:4317",
    ),
    "otel_exporter_otlp_traces_endpoint": (
        {"tracing": {"enabled": True, "tracesEndpoint": "http://traces:4317"}},
        "http://traces:4317",
    ),
    "otel_traces_sampler": (
        {"tracing": {"enabled": True, "sampler": "always_on"}},
        "always_on",
    ),
    "otel_traces_sampler_arg": ({"tracing": {"enabled": True, "samplerArg": "0.25"}}, "0.25"),
}


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


#: Valid non-default values of string settings with a format of their own.
SAMPLES: dict[str, Any] = {"otel_propagators": "tracecontext"}


def sample_value(name: str) -> Any:
    """A valid value for a plain setting that differs from its default."""
    if name in SAMPLES:
        return SAMPLES[name]
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    annotation = field.annotation
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    literals = [a for a in typing.get_args(args[0] if args else annotation) if isinstance(a, str)]
    literals += [a for a in typing.get_args(annotation) if isinstance(a, str)]
    if literals:
        return next(option for option in literals if option != default)
    if isinstance(default, bool):
        return not default
    if isinstance(default, int | float):
        return default + 1
    return "127.0.0.1"


def same_setting(rendered: Any, expected: Any) -> bool:
    """Equal as the service reads them: "6" is 6.0, "true" is True."""
    if isinstance(expected, bool):
        return bool(rendered == str(expected).lower())
    if isinstance(expected, int | float):
        return isinstance(rendered, str) and float(rendered) == float(expected)
    return bool(rendered == expected)


def test_the_derived_table_names_only_real_settings() -> None:
    assert set(DERIVED) <= set(Settings.model_fields)


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_reachable_from_the_chart(name: str) -> None:
    variable = name.upper()
    if name in DERIVED:
        values, expected = DERIVED[name]
    else:
        with helm().Chart.load(CHART) as chart:
            config = chart.values["config"]
        assert camel(name) in config, (
            f"Settings.{name} ({variable}) cannot be set through the chart: add "
            f"config.{camel(name)} to values.yaml and values.schema.json, or derive it in the "
            "templates and list it in DERIVED"
        )
        value = sample_value(name)
        values, expected = {"config": {camel(name): value}}, value
    rendered = container_env(manifests(render(values))).get(variable)
    assert same_setting(rendered, expected), f"{variable}: rendered {rendered!r}, not {expected!r}"


@pytest.mark.parametrize("values_file", ALL_VALUES, ids=scenario_id)
def test_rendered_environment_is_a_valid_configuration(
    values_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What each scenario gives the container is accepted by the service's Settings."""
    settings = rendered_settings(manifests(render(load_values(values_file))), tmp_path, monkeypatch)
    assert settings.health_port != 0
    if settings.storage_backend == "postgres":
        assert isinstance(settings.database_url, SecretStr)


# --- values.yaml is documented, in the file and in docs/deployment.md ----------------------


def documented_keys() -> dict[str, bool]:
    """Every key path of values.yaml -> whether a `# --` comment sits right above it."""
    keys: dict[str, bool] = {}
    stack: list[str] = []
    commented = False
    sequence: int | None = None  # indentation of the "- " items of a list being skipped
    for line in (CHART / "values.yaml").read_text().splitlines():
        stripped = line.strip()
        if not stripped:
            commented = False
            continue
        if stripped.startswith("# --"):
            commented = True
            continue
        if stripped.startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("- ") and (sequence is None or indent <= sequence):
            sequence = indent
        if sequence is not None and (indent > sequence or stripped.startswith("- ")):
            continue  # inside a list's items: their keys are data, not settings
        sequence = None
        match = re.match(r"^( *)([A-Za-z_]\w*):", line)
        if match:
            depth = len(match[1]) // 2
            stack = [*stack[:depth], match[2]]
            keys[".".join(stack)] = commented
        commented = False
    return keys


def test_every_values_key_is_commented() -> None:
    """Each setting (a key with no children) has its comment, or its parent's covers it."""
    keys = documented_keys()
    leaves = [key for key in keys if not any(other.startswith(key + ".") for other in keys)]
    undocumented = [
        key
        for key in leaves
        if not keys[key] and not any(keys.get(key.rsplit(".", n)[0]) for n in (1, 2))
    ]
    assert undocumented == []


def test_deployment_docs_list_every_documented_values_key() -> None:
    docs = (ROOT / "docs" / "deployment.md").read_text()
    missing = [key for key, commented in documented_keys().items() if commented]
    missing = [key for key in missing if f"| `{key}` |" not in docs]
    assert missing == [], "docs/deployment.md's values table misses these keys"
