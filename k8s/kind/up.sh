#!/usr/bin/env bash
# make kind-up: create a kind cluster (unless it exists), build the image and load it into the
# cluster, apply the observability stack (Jaeger, Prometheus), then `helm install --wait`.
#   STORAGE=postgres   also deploy the development PostgreSQL and run 2 replicas on it
#   CLUSTER, IMAGE     cluster name (default payments), image (default payments-service:<version>)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${CLUSTER:-payments}
image=${IMAGE:-payments-service:0.1.0}
storage=${STORAGE:-memory}
namespace=payments
release=payments-service
context=kind-${cluster}

for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
done
case "$storage" in
  memory|postgres) ;;
  *) echo "STORAGE must be memory or postgres, not $storage" >&2; exit 2 ;;
esac

step() { printf '\n==> %s\n' "$*"; }

if ! kind get clusters | grep -qx "$cluster"; then
  step "creating kind cluster $cluster"
  kind create cluster --name "$cluster" --config "$root/k8s/kind/cluster.yaml" --wait 180s
fi

step "building $image"
docker build --tag "$image" "$root"
step "loading $image into $cluster"
kind load docker-image "$image" --name "$cluster"

step "observability stack (Jaeger, Prometheus)"
kubectl --context "$context" apply -f "$root/k8s/observability/"
kubectl --context "$context" -n monitoring create configmap prometheus-rules \
  --from-file=alerts.yaml="$root/helm/payments-service/files/alerts.yaml" \
  --dry-run=client -o yaml | kubectl --context "$context" apply -f -
kubectl --context "$context" -n observability rollout status deployment/jaeger --timeout=180s
kubectl --context "$context" -n monitoring rollout status deployment/prometheus --timeout=180s

step "namespace $namespace (restricted Pod Security Standard enforced)"
kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml \
  | kubectl --context "$context" apply -f -
kubectl --context "$context" label --overwrite namespace "$namespace" \
  pod-security.kubernetes.io/enforce=restricted

values=(--values "$root/k8s/kind/values.yaml")
if [ "$storage" = postgres ]; then
  step "development PostgreSQL"
  kubectl --context "$context" apply -f "$root/k8s/postgres/postgres.yaml"
  kubectl --context "$context" -n "$namespace" rollout status statefulset/postgres --timeout=180s
  values+=(--values "$root/k8s/kind/values-postgres.yaml")
fi

step "helm upgrade --install $release (storage: $storage)"
helm upgrade --install "$release" "$root/helm/payments-service" \
  --kube-context "$context" --namespace "$namespace" "${values[@]}" \
  --set image.repository="${image%:*}" --set image.tag="${image##*:}" \
  --wait --timeout 5m
kubectl --context "$context" -n "$namespace" get pods -o wide
