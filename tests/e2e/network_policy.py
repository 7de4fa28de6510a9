"""What Kubernetes NetworkPolicy allows, for the chart's policies: no cluster runs here, so the
rules of the API reference (networking.k8s.io/v1) are applied to rendered policies directly.

A connection from one endpoint to another's port is allowed when the destination's policies
(those of its namespace selecting it, with policyType Ingress) allow it in, and the source's
(Egress) allow it out; an endpoint no policy of that type selects is not isolated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Endpoint:
    """A pod (or, with ``pod=False``, a node or other host outside the pod network)."""

    namespace: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str = "10.244.1.10"
    ports: dict[str, int] = field(default_factory=dict)  # named container ports
    pod: bool = True


def in_namespace(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    """Namespace fields of an Endpoint: the name and its automatic metadata.name label."""
    return {
        "namespace": name,
        "namespace_labels": {"kubernetes.io/metadata.name": name, **(labels or {})},
    }


def matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist)."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def peer_matches(peer: dict[str, Any], namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(c) for c in block.get("except", []))
    if not other.pod:  # only an ipBlock selects what is not a pod
        return False
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], other.namespace_labels):
            return False
    elif other.namespace != namespace:  # a podSelector alone means the policy's namespace
        return False
    return "podSelector" not in peer or matches(peer["podSelector"], other.labels)


def port_matches(rule: dict[str, Any], target: Endpoint, port: int) -> bool:
    names = {number: name for name, number in target.ports.items()}
    for allowed in rule.get("ports") or [{}]:
        wanted = allowed.get("port")
        if wanted is None or wanted == port or wanted == names.get(port):
            return True
        if (
            isinstance(wanted, int)
            and "endPort" in allowed
            and wanted <= port <= allowed["endPort"]
        ):
            return True
    return False


def _direction_allows(
    policies: list[dict[str, Any]], owner: Endpoint, other: Endpoint, port: int, ingress: bool
) -> bool:
    kind, peers_key = ("Ingress", "from") if ingress else ("Egress", "to")
    target = owner if ingress else other
    selecting = [
        p
        for p in policies
        if p["metadata"].get("namespace") == owner.namespace
        and owner.pod
        and matches(p["spec"].get("podSelector"), owner.labels)
        and kind in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(kind.lower()) or []:
            peers = rule.get(peers_key)
            if not port_matches(rule, target, port):
                continue
            namespace = policy["metadata"]["namespace"]
            if not peers or any(peer_matches(peer, namespace, other) for peer in peers):
                return True
    return False


def allowed(policies: list[dict[str, Any]], source: Endpoint, target: Endpoint, port: int) -> bool:
    """Whether ``source`` may open a connection to ``target`` on ``port``."""
    return _direction_allows(policies, target, source, port, ingress=True) and _direction_allows(
        policies, source, target, port, ingress=False
    )
