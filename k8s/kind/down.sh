#!/usr/bin/env bash
# make kind-down: delete the kind cluster made by kind-up (and everything in it).
set -euo pipefail
cluster=${CLUSTER:-payments}
command -v kind >/dev/null || { echo "kind-down needs kind on PATH" >&2; exit 1; }
kind delete cluster --name "$cluster"
