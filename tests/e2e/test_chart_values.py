"""What platform teams set on their first day with the chart, rendered by the real Helm engine:
numbers, subcharts, labels, tags, disruption budgets, resources, versions, Services, rollouts
and the conventions of `helm create` and the Bitnami / prometheus-community charts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from payments_service import __version__
from payments_service.config import ConfigurationError
from tests.support.chart import (
    CHART,
    KIND_VALUES,
    SCENARIOS,
    deep_merge,
    helm,
    load_values,
    manifests,
    objects_of,
    render,
    rendered_settings,
    single_object,
)

pytestmark = pytest.mark.tools

POSTGRES = {"storage": {"backend": "postgres", "postgres": {"existingSecret": "db"}}}


def refused(values: dict[str, Any], **render_args: Any) -> str:
    """The message the chart refuses ``values`` with (schema or template)."""
    errors = helm()
    with pytest.raises((errors.HelmValuesError, errors.HelmRenderError)) as raised:
        render(values, **render_args)
    return str(raised.value)


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = [
        c
        for c in single_object(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "payments-service"
    ]
    assert isinstance(container, dict)
    return container


# --- 1. numbers reach the service as the numbers they are ---------------------------------


@pytest.mark.parametrize(
    "values",
    [
        {"config": {"maxReceiveMessageBytes": 4194304, "maxConcurrentRpcs": 100000}},
        {"config": {"maxReceiveMessageBytes": 67108864, "maxConnectionAgeSeconds": 86400}},
        deep_merge(POSTGRES, {"storage": {"postgres": {"poolMinSize": 10, "poolMaxSize": 100}}}),
    ],
    ids=["4MiB", "64MiB", "pool"],
)
def test_large_whole_numbers_reach_the_service_as_integers(
    values: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Helm reads numbers as floats; toString writes 4.194304e+06, which the service refuses."""
    settings = rendered_settings(manifests(render(values)), tmp_path, monkeypatch)
    for key, value in values.get("config", {}).items():
        field = {"maxReceiveMessageBytes": "max_receive_message_bytes"}.get(key)
        if field:
            assert getattr(settings, field) == value
    if "storage" in values:
        assert (settings.database_pool_min_size, settings.database_pool_max_size) == (10, 100)


def test_numbers_from_set_flags_and_fractions_keep_their_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # --set makes whole numbers integers (and keeps 7.5 a string: --set-json gives a number).
    values = deep_merge(
        helm().parse_set_string("config.maxReceiveMessageBytes=8388608"),
        helm().parse_set_json(
            "config.gracePeriodSeconds=7.5,config.keepaliveTimeSeconds=1200000.5"
        ),
    )
    errors = helm()
    with pytest.raises(errors.HelmValuesError, match="keepaliveTimeSeconds"):
        render(values)  # the schema holds the service's bounds: 7200 s at most
    values["config"]["keepaliveTimeSeconds"] = 7200
    settings = rendered_settings(manifests(render(values)), tmp_path, monkeypatch)
    assert settings.max_receive_message_bytes == 8388608
    assert settings.grace_period_seconds == 7.5
    assert settings.keepalive_time_seconds == 7200


def test_the_schema_refuses_what_the_service_would_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At `helm install`, not as a crash-looping pod."""
    assert "/config/maxReceiveMessageBytes" in refused(
        {"config": {"maxReceiveMessageBytes": 128 * 1024 * 1024}}
    )
    # The bound itself is the service's: 64 MiB passes there, one byte more would not.
    from payments_service.config import load_settings

    monkeypatch.setenv("MAX_RECEIVE_MESSAGE_BYTES", str(64 * 1024 * 1024 + 1))
    with pytest.raises(ConfigurationError, match="MAX_RECEIVE_MESSAGE_BYTES"):
        load_settings()


# --- 2. as a subchart ---------------------------------------------------------------------


def umbrella(tmp_path: Path, values: dict[str, Any]) -> dict[str, str]:
    """Render a parent chart that depends on this one behind payments-service.enabled."""
    parent = tmp_path / "platform"
    shutil.copytree(CHART, parent / "charts" / "payments-service")
    (parent / "Chart.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v2",
                "name": "platform",
                "version": "1.0.0",
                "dependencies": [
                    {
                        "name": "payments-service",
                        "version": "*",
                        "condition": "payments-service.enabled",
                    }
                ],
            }
        )
    )
    (parent / "values.yaml").write_text(yaml.safe_dump(values))
    with helm().Chart.load(parent) as chart:
        rendered: dict[str, str] = chart.render(values={}, name="platform", namespace="payments")
    return rendered


def test_the_chart_works_as_a_subchart_behind_a_condition(tmp_path: Path) -> None:
    image = {"image": {"repository": "registry.example.com/payments-service"}}
    on = umbrella(
        tmp_path / "on",
        {"global": {"imageRegistry": "x"}, "payments-service": {"enabled": True, **image}},
    )
    deployment = single_object(manifests(on), "Deployment")
    assert deployment["metadata"]["name"] == "platform-payments-service"
    off = umbrella(tmp_path / "off", {"payments-service": {"enabled": False, **image}})
    assert manifests(off) == []


# --- 5. no zero preStop sleep -------------------------------------------------------------


def test_a_zero_prestop_pause_leaves_the_hook_out() -> None:
    """Kubernetes 1.30-1.32 refuse sleep.seconds: 0 (only 1.33 allows it)."""
    container = server_container(manifests(render({"lifecycle": {"preStopSleepSeconds": 0}})))
    assert "lifecycle" not in container
    for values_file in [*SCENARIOS, *KIND_VALUES]:
        container = server_container(manifests(render(load_values(values_file))))
        assert container["lifecycle"]["preStop"]["sleep"]["seconds"] >= 1


# --- 6. labels, autoscaling bounds, image tags ----------------------------------------------


@pytest.mark.parametrize("where", ["podLabels", "commonLabels"])
@pytest.mark.parametrize("label", ["app.kubernetes.io/name", "app.kubernetes.io/instance"])
def test_selector_labels_cannot_be_overwritten(where: str, label: str) -> None:
    """The Deployment would be rejected (its selector no longer matches its pods)."""
    assert f"{where} may not set {label}" in refused({where: {label: "other"}})


def test_pod_and_common_labels_land_without_duplicates() -> None:
    values = {"podLabels": {"team": "pods", "app.kubernetes.io/part-of": "shop"}}
    objects = manifests(render({**values, "commonLabels": {"team": "all", "cost": "c1"}}))
    pod_labels = single_object(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pod_labels["team"] == "pods"
    assert pod_labels["cost"] == "c1"
    assert pod_labels["app.kubernetes.io/part-of"] == "shop"
    for obj in objects:
        assert obj["metadata"]["labels"]["cost"] == "c1", obj["kind"]


def test_min_replicas_above_max_is_refused_at_render() -> None:
    values = deep_merge(
        POSTGRES, {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}
    )
    assert "autoscaling.minReplicas=5 is above autoscaling.maxReplicas=3" in refused(values)


@pytest.mark.parametrize(
    ("expression", "image"),
    [
        ("image.tag=20240101", "payments-service:20240101"),
        ("image.tag=1.2.3", "payments-service:1.2.3"),
        ("image.tag=2.0", "payments-service:2.0"),
    ],
)
def test_tags_given_with_set_render_as_written(expression: str, image: str) -> None:
    """`--set image.tag=20240101` arrives as a number."""
    container = server_container(manifests(render(helm().parse_set_string(expression))))
    assert container["image"] == image


def test_a_missing_image_repository_is_refused_not_pulled_from_docker_hub() -> None:
    assert "image.repository is not set" in refused({}, image=False)


# --- 9. disruption budgets that still let a node drain --------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("podDisruptionBudget.enabled=true,podDisruptionBudget.minAvailable=1", "with 1 pod(s)"),
        (
            "podDisruptionBudget.enabled=true,replicaCount=3,podDisruptionBudget.minAvailable=3",
            "minAvailable=3 with 3 pod(s) (replicaCount)",
        ),
        (
            "podDisruptionBudget.enabled=true,autoscaling.enabled=true,autoscaling.minReplicas=1",
            "minAvailable=1 with 1 pod(s) (autoscaling.minReplicas)",
        ),
        (
            "podDisruptionBudget.enabled=true,replicaCount=2,podDisruptionBudget.minAvailable=60%",
            "minAvailable=60% with 2 pod(s)",
        ),
        (
            "podDisruptionBudget.enabled=true,replicaCount=2,podDisruptionBudget.maxUnavailable=0",
            "maxUnavailable=0 would block",
        ),
    ],
)
def test_a_budget_that_blocks_every_drain_is_refused(expression: str, message: str) -> None:
    values = deep_merge(POSTGRES, helm().parse_set_string(expression))
    text = refused(values)
    assert message in text
    assert "would block every node drain" in text


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        ({"minAvailable": 2}, {"minAvailable": 2}),
        ({"minAvailable": "50%"}, {"minAvailable": "50%"}),
        ({"maxUnavailable": 1}, {"maxUnavailable": 1}),
        ({"maxUnavailable": "34%"}, {"maxUnavailable": "34%"}),
    ],
)
def test_a_budget_that_leaves_a_pod_to_drain_renders(
    budget: dict[str, Any], expected: dict[str, Any]
) -> None:
    values = deep_merge(
        POSTGRES, {"replicaCount": 3, "podDisruptionBudget": {"enabled": True, **budget}}
    )
    spec = single_object(manifests(render(values)), "PodDisruptionBudget")["spec"]
    assert {k: v for k, v in spec.items() if k != "selector"} == expected


# --- 10. resources ------------------------------------------------------------------------


def test_limits_can_be_removed_and_extended() -> None:
    values = {
        "resources": {
            "limits": {"cpu": None, "ephemeral-storage": "256Mi"},
            "requests": {"ephemeral-storage": "64Mi"},
        }
    }
    resources = server_container(manifests(render(values)))["resources"]
    assert resources == {
        "limits": {"memory": "256Mi", "ephemeral-storage": "256Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "64Mi"},
    }
    assert "resources" not in server_container(manifests(render({"resources": None})))


# --- 11. the version the labels and traces carry ------------------------------------------


@pytest.mark.parametrize(
    ("image", "label", "reference"),
    [
        ({}, "0.1.0", "payments-service:0.1.0"),
        ({"tag": "0.2.0"}, "0.2.0", "payments-service:0.2.0"),
        ({"digest": "sha256:" + "a" * 64}, None, "payments-service@sha256:" + "a" * 64),
        (
            {"tag": "0.2.0", "digest": "sha256:" + "a" * 64},
            "0.2.0",
            "payments-service:0.2.0@sha256:" + "a" * 64,
        ),
    ],
    ids=["appVersion", "tag", "digest", "tag+digest"],
)
def test_the_version_label_is_what_the_image_deploys(
    image: dict[str, str], label: str | None, reference: str
) -> None:
    objects = manifests(render({"image": image}))
    assert server_container(objects)["image"] == reference
    for obj in objects:
        assert obj["metadata"]["labels"].get("app.kubernetes.io/version") == label, obj["kind"]


def test_traces_carry_the_running_codes_version_not_the_charts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An image of 0.2.0 deployed with this chart reports service.version 0.2.0."""
    from payments_service.observability import tracing

    values = {"image": {"tag": "0.2.0"}, "tracing": {"enabled": True}}
    settings = rendered_settings(manifests(render(values)), tmp_path, monkeypatch)
    monkeypatch.setattr(tracing, "__version__", "0.2.0")  # what that image's code says
    resource = tracing.build_resource(settings).attributes
    assert resource["service.version"] == "0.2.0"
    assert __version__ == "0.1.0"  # this checkout: the chart's appVersion is no evidence


# --- 14. readiness tolerates one slow answer ------------------------------------------------


def kubelet_ready_after(results: list[bool], failure_threshold: int) -> list[bool]:
    """Readiness as the kubelet keeps it: unready after failureThreshold failures in a row,
    ready again after one success (successThreshold 1)."""
    ready, failures, states = True, 0, []
    for passed in results:
        failures = 0 if passed else failures + 1
        ready = passed or (ready and failures < failure_threshold)
        states.append(ready)
    return states


@pytest.mark.parametrize("values_file", [*SCENARIOS, *KIND_VALUES], ids=lambda p: p.name)
def test_one_slow_readiness_answer_keeps_the_pod_in_and_an_outage_takes_it_out(
    values_file: Path,
) -> None:
    probe = server_container(manifests(render(load_values(values_file))))["readinessProbe"]
    threshold, period = probe["failureThreshold"], probe["periodSeconds"]
    assert all(kubelet_ready_after([True, False, True, False, True], threshold))
    outage = kubelet_ready_after([True] + [False] * 10, threshold)
    out_after = outage.index(False) * period
    assert out_after <= 20, f"a database outage keeps the pod in the Service for {out_after}s"


# --- 16. what a LoadBalancer publishes ------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True])
def test_a_load_balancer_publishes_the_api_only(tls: bool) -> None:
    values: dict[str, Any] = {"service": {"type": "LoadBalancer"}}
    if tls:
        values["tls"] = {"enabled": True, "secretName": "tls"}
    values["metrics"] = {"serviceMonitor": {"enabled": True}}
    objects = manifests(render(values))
    services = {s["metadata"]["name"]: s for s in objects_of(objects, "Service")}
    public = services["payments-service"]
    assert public["spec"]["type"] == "LoadBalancer"
    assert [p["name"] for p in public["spec"]["ports"]] == ["grpc"]
    internal = services["payments-service-internal"]
    assert internal["spec"]["type"] == "ClusterIP"
    assert {p["name"] for p in internal["spec"]["ports"]} == (
        {"metrics", "health"} if tls else {"metrics"}
    )
    # The ServiceMonitor picks the in-cluster Service, the one with a metrics port.
    wanted = single_object(objects, "ServiceMonitor")["spec"]["selector"]["matchLabels"]
    picked = [s for s in services.values() if wanted.items() <= s["metadata"]["labels"].items()]
    assert picked == [internal]


# --- 19. rollouts with the in-memory store ----------------------------------------------------


def test_the_in_memory_store_is_replaced_not_rolled() -> None:
    """A rolling update would run two pods with two different sets of payments."""
    memory = single_object(manifests(render()), "Deployment")["spec"]["strategy"]
    assert memory == {"type": "Recreate"}
    postgres = single_object(manifests(render(POSTGRES)), "Deployment")["spec"]["strategy"]
    assert postgres == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }


# --- 20. one scrape per pod -------------------------------------------------------------------


def test_a_service_monitor_replaces_the_scrape_annotations() -> None:
    """Both would scrape every pod twice, and double every rate."""
    values = {"metrics": {"serviceMonitor": {"enabled": True}}}
    annotations = single_object(manifests(render(values)), "Deployment")["spec"]["template"][
        "metadata"
    ]
    assert not any(key.startswith("prometheus.io/") for key in annotations["annotations"])
    plain = single_object(manifests(render()), "Deployment")["spec"]["template"]["metadata"]
    assert plain["annotations"]["prometheus.io/scrape"] == "true"


# --- conventions users expect -------------------------------------------------------------


@pytest.mark.parametrize("values_file", [*SCENARIOS, *KIND_VALUES], ids=lambda p: p.name)
def test_a_partial_values_file_validates_on_its_own(values_file: Path) -> None:
    """What an editor or CI does with values.schema.json before Helm merges the defaults."""
    import jsonschema

    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator(schema).validate(load_values(values_file))


def test_openshift_can_assign_the_user() -> None:
    values = {
        "podSecurityContext": {"runAsUser": None, "runAsGroup": None, "fsGroup": None},
        "securityContext": {"runAsUser": None, "runAsGroup": None},
    }
    objects = manifests(render(deep_merge(POSTGRES, values)))
    spec = single_object(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["securityContext"] == {
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    for container in [*spec["initContainers"], *spec["containers"]]:
        context = container["securityContext"]
        assert "runAsUser" not in context
        assert "runAsGroup" not in context
        assert context["runAsNonRoot"] is True
        assert context["readOnlyRootFilesystem"] is True


def test_extra_volumes_env_and_containers_reach_both_containers() -> None:
    values = deep_merge(
        POSTGRES,
        {
            "extraVolumes": [{"name": "db-ca", "secret": {"secretName": "db-ca"}}],
            "extraVolumeMounts": [{"name": "db-ca", "mountPath": "/etc/db-ca", "readOnly": True}],
            "extraEnvFrom": [{"secretRef": {"name": "extra"}}],
            "initContainers": [{"name": "proxy", "image": "proxy:1", "restartPolicy": "Always"}],
            "extraContainers": [{"name": "sidecar", "image": "sidecar:1"}],
            "priorityClassName": "critical",
            "serviceAccount": {"automount": True},
        },
    )
    spec = single_object(manifests(render(values)), "Deployment")["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["proxy", "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["payments-service", "sidecar"]
    assert {"name": "db-ca", "secret": {"secretName": "db-ca"}} in spec["volumes"]
    for container in (spec["initContainers"][1], spec["containers"][0]):
        assert {"name": "db-ca", "mountPath": "/etc/db-ca", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert {"secretRef": {"name": "extra"}} in container["envFrom"]
    assert spec["priorityClassName"] == "critical"
    assert spec["automountServiceAccountToken"] is True


def test_hpa_takes_a_memory_target_and_a_behavior() -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 300}}
    values = deep_merge(
        POSTGRES,
        {
            "autoscaling": {
                "enabled": True,
                "targetCPUUtilizationPercentage": None,
                "targetMemoryUtilizationPercentage": 80,
                "behavior": behavior,
            }
        },
    )
    hpa = single_object(manifests(render(values)), "HorizontalPodAutoscaler")["spec"]
    assert [m["resource"]["name"] for m in hpa["metrics"]] == ["memory"]
    assert hpa["behavior"] == behavior


@pytest.mark.parametrize("duration", ["30s", "1m30s", "2h", "500ms"])
def test_service_monitor_takes_prometheus_durations(duration: str) -> None:
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "interval": duration, "scrapeTimeout": "10s"}
        }
    }
    endpoint = single_object(manifests(render(values)), "ServiceMonitor")["spec"]["endpoints"][0]
    assert endpoint["interval"] == duration
    assert endpoint["scrapeTimeout"] == "10s"


@pytest.mark.parametrize("duration", ["90", "1.5m", "s", "1m 30s"])
def test_service_monitor_refuses_what_prometheus_would_not_parse(duration: str) -> None:
    values = {"metrics": {"serviceMonitor": {"enabled": True, "interval": duration}}}
    assert "/metrics/serviceMonitor/interval" in refused(values)


def test_ingress_and_grpc_route_send_traffic_to_the_grpc_port() -> None:
    values = {
        "ingress": {"enabled": True, "className": "nginx", "hosts": ["payments.example.com"]},
        "grpcRoute": {"enabled": True, "parentRefs": [{"name": "gw"}], "hostnames": ["p.example"]},
    }
    objects = manifests(render(values))
    (rule,) = single_object(objects, "Ingress")["spec"]["rules"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "payments-service", "port": {"name": "grpc"}}
    route = single_object(objects, "GRPCRoute")["spec"]
    assert route["parentRefs"] == [{"name": "gw"}]
    assert route["rules"] == [{"backendRefs": [{"name": "payments-service", "port": 7000}]}]
    assert "needs grpcRoute.parentRefs" in refused({"grpcRoute": {"enabled": True}})


def test_dashboards_of_two_releases_do_not_collide() -> None:
    values = {"metrics": {"dashboard": {"enabled": True}}}

    def dashboard(namespace: str) -> dict[str, Any]:
        objects = manifests(render(values, namespace=namespace))
        (configmap,) = [
            c for c in objects_of(objects, "ConfigMap") if "dashboard" in c["metadata"]["name"]
        ]
        loaded: dict[str, Any] = json.loads(configmap["data"]["payments-service.json"])
        return loaded

    staging, production = dashboard("staging"), dashboard("production")
    assert staging["uid"] != production["uid"]
    assert staging["title"] != production["title"]
    assert len(staging["uid"]) <= 40  # Grafana's limit
    variables = {v["name"]: v for v in production["templating"]["list"]}
    assert variables["namespace"]["current"]["value"] == "production"
    for panel in production["panels"]:
        for target in panel["targets"]:
            assert 'namespace=~"$namespace"' in target["expr"], panel["title"]
