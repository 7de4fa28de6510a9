#!/usr/bin/env bash
# make kind-up: create a kind cluster (unless it exists), build the image and load it into the
# cluster, apply the observability stack (Jaeger, Prometheus), then `helm install --wait`.
#   STORAGE=postgres   also deploy the development PostgreSQL and run 2 replicas on it
#   CLUSTER, IMAGE     cluster name (default payments), image (default payments-service:<version>;
#                      a registry with a port works, a missing tag means latest)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster=${CLUSTER:-payments}
image=${IMAGE:-payments-service:0.1.0}
storage=${STORAGE:-memory}
namespace=payments
release=payments-service
context=kind-${cluster}
# The kind release the pinned node image of cluster.yaml is built for (older kind cannot run it).
kind_minimum=0.31.0

step() { printf '\n==> %s\n' "$*"; }

# The repository and tag of an image reference: the tag is what follows the last colon after
# the last slash (so registry.local:5000/payments-service has no tag, and gets latest).
image_repository() {
  local name=$1
  case "${name##*/}" in
    *:*) printf '%s\n' "${name%:*}" ;;
    *) printf '%s\n' "$name" ;;
  esac
}
image_tag() {
  local name=$1
  case "${name##*/}" in
    *:*) printf '%s\n' "${name##*:}" ;;
    *) printf 'latest\n' ;;
  esac
}

# "kind v0.31.0 go1.25.5 linux/amd64" -> 0.31.0
kind_version() { kind version | sed -n 's/^kind v\([0-9][0-9.]*\).*/\1/p'; }

# Whether version $1 is at least $2 (both x.y.z).
at_least() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n1)" = "$2" ]; }

build_image() {
  # BuildKit adds provenance attestations, which `kind load` cannot import from Docker's
  # containerd image store (kubernetes-sigs/kind#3795): build without them.
  if docker buildx version >/dev/null 2>&1; then
    docker buildx build --provenance=false --load --tag "$image" "$root"
  else
    docker build --tag "$image" "$root"
  fi
}

main() {
  for tool in docker kind kubectl helm; do
    command -v "$tool" >/dev/null || { echo "kind-up needs $tool on PATH" >&2; exit 1; }
  done
  case "$storage" in
    memory|postgres) ;;
    *) echo "STORAGE must be memory or postgres, not $storage" >&2; exit 2 ;;
  esac
  case "$image" in
    *@*) echo "IMAGE is what kind-up builds, a name and tag, not a digest: $image" >&2; exit 2 ;;
  esac
  local version
  version=$(kind_version)
  if [ -z "$version" ] || ! at_least "$version" "$kind_minimum"; then
    echo "kind-up needs kind v$kind_minimum or newer (found: $(kind version)): the node image" \
      "pinned in k8s/kind/cluster.yaml is built for it" >&2
    exit 1
  fi

  if ! kind get clusters | grep -qx "$cluster"; then
    step "creating kind cluster $cluster"
    kind create cluster --name "$cluster" --config "$root/k8s/kind/cluster.yaml" --wait 180s
  fi

  step "building $image"
  build_image
  step "loading $image into $cluster"
  kind load docker-image "$image" --name "$cluster"

  step "observability stack (Jaeger, Prometheus)"
  kubectl --context "$context" apply -f "$root/k8s/observability/"
  local rules="$root/helm/payments-service/files/alerts.yaml"
  kubectl --context "$context" -n monitoring create configmap prometheus-rules \
    --from-file=alerts.yaml="$rules" --dry-run=client -o yaml \
    | kubectl --context "$context" apply -f -
  # Prometheus reads its rules at start: a new checksum in the pod template restarts it when
  # the rules changed (and only then).
  local checksum
  checksum=$(sha256sum "$rules" | cut -c1-16)
  kubectl --context "$context" -n monitoring patch deployment prometheus --type merge -p \
    "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"payments-service/rules-checksum\":\"$checksum\"}}}}}"
  kubectl --context "$context" -n observability rollout status deployment/jaeger --timeout=180s
  kubectl --context "$context" -n monitoring rollout status deployment/prometheus --timeout=180s

  step "namespace $namespace (restricted Pod Security Standard enforced)"
  kubectl --context "$context" create namespace "$namespace" --dry-run=client -o yaml \
    | kubectl --context "$context" apply -f -
  kubectl --context "$context" label --overwrite namespace "$namespace" \
    pod-security.kubernetes.io/enforce=restricted

  local values=(--values "$root/k8s/kind/values.yaml")
  if [ "$storage" = postgres ]; then
    step "development PostgreSQL"
    kubectl --context "$context" apply -f "$root/k8s/postgres/postgres.yaml"
    kubectl --context "$context" -n "$namespace" rollout status statefulset/postgres --timeout=180s
    values+=(--values "$root/k8s/kind/values-postgres.yaml")
  fi

  step "helm upgrade --install $release (storage: $storage)"
  # --set-string: a tag like 20240101 must stay a string.
  helm upgrade --install "$release" "$root/helm/payments-service" \
    --kube-context "$context" --namespace "$namespace" "${values[@]}" \
    --set-string image.repository="$(image_repository "$image")" \
    --set-string image.tag="$(image_tag "$image")" \
    --wait --timeout 5m
  kubectl --context "$context" -n "$namespace" get pods -o wide
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
