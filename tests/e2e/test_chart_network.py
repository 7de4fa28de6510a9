"""The chart's NetworkPolicies, applied by the rules of the Kubernetes API (no cluster runs
here): who reaches which port of the server, including `helm test` and the kubelet."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.network_policy import Endpoint, allowed, in_namespace
from tests.support.chart import (
    CHART,
    NAMESPACE,
    deep_merge,
    load_values,
    manifests,
    objects_of,
    render,
)

pytestmark = pytest.mark.tools

PRODUCTION = load_values(CHART / "ci" / "production-values.yaml")


def pods(values: dict[str, Any]) -> tuple[list[dict[str, Any]], Endpoint, Endpoint]:
    """(policies, the server pod, the helm test pod) of a render, as they would run."""
    objects = manifests(render(values))
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    (container,) = [c for c in template["spec"]["containers"] if c["name"] == "payments-service"]
    server = Endpoint(
        **in_namespace(NAMESPACE),
        labels=template["metadata"]["labels"],
        ip="10.244.1.10",
        ports={p["name"]: p["containerPort"] for p in container["ports"]},
    )
    (test_pod,) = objects_of(objects, "Pod")
    tester = Endpoint(
        **in_namespace(NAMESPACE), labels=test_pod["metadata"]["labels"], ip="10.244.2.20"
    )
    return objects_of(objects, "NetworkPolicy"), server, tester


@pytest.mark.parametrize(
    "values",
    [
        {"networkPolicy": {"enabled": True}},
        PRODUCTION,
        {
            "networkPolicy": {
                "enabled": True,
                "grpcFrom": [{"podSelector": {"matchLabels": {"role": "client"}}}],
            }
        },
    ],
    ids=["default-peers", "production", "restricted-peers"],
)
def test_helm_test_reaches_the_ports_it_calls(values: dict[str, Any]) -> None:
    """Whatever grpcFrom allows, the chart's own test pod gets through both policies."""
    policies, server, tester = pods(values)
    port = server.ports["health"] if values.get("tls", {}).get("enabled") else server.ports["grpc"]
    assert allowed(policies, tester, server, port)
    # DNS, to resolve the Service's name first.
    dns = Endpoint(**in_namespace("kube-system"), labels={"k8s-app": "kube-dns"}, ip="10.96.0.10")
    assert allowed(policies, tester, dns, 53)


def test_other_pods_are_still_kept_out() -> None:
    policies, server, _ = pods(PRODUCTION)
    stranger = Endpoint(**in_namespace(NAMESPACE), labels={"app": "other"}, ip="10.244.3.30")
    client = Endpoint(
        **in_namespace("shop", {"payments.example.com/client": "true"}),
        labels={"app": "shop"},
        ip="10.244.3.31",
    )
    assert not allowed(policies, stranger, server, server.ports["grpc"])
    assert allowed(policies, client, server, server.ports["grpc"])
    assert not allowed(policies, client, server, server.ports["metrics"])


@pytest.mark.parametrize(
    ("dns_to", "dns_port", "resolver"),
    [
        (
            None,
            None,
            Endpoint(
                **in_namespace("kube-system"), labels={"k8s-app": "kube-dns"}, ip="10.96.0.10"
            ),
        ),
        (
            [{"ipBlock": {"cidr": "169.254.20.10/32"}}],
            None,
            Endpoint(ip="169.254.20.10", pod=False),  # NodeLocal DNSCache on the node
        ),
        (
            [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "openshift-dns"}
                    }
                }
            ],
            5353,
            Endpoint(
                **in_namespace("openshift-dns"),
                labels={"dns.operator.openshift.io/daemonset-dns": "default"},
            ),
        ),
    ],
    ids=["kube-dns", "nodelocal-dnscache", "openshift"],
)
def test_dns_egress_follows_the_clusters_resolver(
    dns_to: list[dict[str, Any]] | None, dns_port: int | None, resolver: Endpoint
) -> None:
    policy: dict[str, Any] = {"enabled": True}
    if dns_to is not None:
        policy["dnsTo"] = dns_to
    if dns_port is not None:
        policy["dnsPort"] = dns_port
    policies, server, tester = pods({"networkPolicy": policy})
    port = dns_port or 53
    assert allowed(policies, server, resolver, port)
    assert allowed(policies, tester, resolver, port)
    assert not allowed(policies, server, resolver, 443)


def test_a_cni_that_filters_probes_can_be_given_the_nodes() -> None:
    """NetworkPolicy exempts a pod's node, but some CNIs have filtered kubelet probes anyway."""
    node = Endpoint(ip="172.18.0.3", pod=False)
    policies, server, _ = pods({"networkPolicy": {"enabled": True}})
    # Under the policy alone the health port is closed to the node's address ...
    assert not allowed(policies, node, server, server.ports["health"])
    values = {
        "networkPolicy": {"enabled": True, "healthFrom": [{"ipBlock": {"cidr": "172.18.0.0/16"}}]}
    }
    policies, server, _ = pods(values)
    assert allowed(policies, node, server, server.ports["health"])
    assert not allowed(policies, node, server, server.ports["grpc"])


def test_extra_rules_are_appended() -> None:
    proxy = Endpoint(ip="10.20.0.5", pod=False)
    values = {
        "networkPolicy": {
            "enabled": True,
            "extraEgress": [
                {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 3307}]}
            ],
            "extraIngress": [
                {"from": [{"ipBlock": {"cidr": "10.30.0.0/16"}}], "ports": [{"port": "grpc"}]}
            ],
        }
    }
    policies, server, _ = pods(deep_merge(values, {}))
    assert allowed(policies, server, proxy, 3307)
    assert allowed(policies, Endpoint(ip="10.30.1.1", pod=False), server, server.ports["grpc"])
