#!/usr/bin/env bash
# make kind-smoke: through port-forwards, call the release with grpcurl (Health,
# RequestPayment, GetPayment), then find its series in Prometheus and its trace in Jaeger.
set -euo pipefail

cluster=${CLUSTER:-payments}
context=kind-${cluster}
namespace=payments
release=payments-service
grpc_port=${SMOKE_GRPC_PORT:-17000}
prometheus_port=${SMOKE_PROMETHEUS_PORT:-19090}
jaeger_port=${SMOKE_JAEGER_PORT:-16686}

for tool in kubectl grpcurl curl python3; do
  command -v "$tool" >/dev/null || { echo "kind-smoke needs $tool on PATH" >&2; exit 1; }
done

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

forward() { # namespace service local:remote
  kubectl --context "$context" -n "$1" port-forward "service/$2" "$3" >/dev/null &
  pids+=("$!")
}
forward "$namespace" "$release" "$grpc_port:7000"
forward monitoring prometheus "$prometheus_port:9090"
forward observability jaeger-query "$jaeger_port:16686"

# Wait until the port-forwards accept connections.
for _ in $(seq 1 30); do
  grpcurl -plaintext "localhost:$grpc_port" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
  sleep 1
done

json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

echo "==> Health"
health=$(grpcurl -plaintext -d '{"service": "payments.v1.PaymentService"}' \
  "localhost:$grpc_port" grpc.health.v1.Health/Check)
echo "$health"
[ "$(echo "$health" | json_field status)" = SERVING ] || { echo "not SERVING" >&2; exit 1; }

echo "==> RequestPayment"
key="smoke-$(date +%s)-$RANDOM"
request=$(printf '{"amount_minor": 1250, "currency": "USD", "order_id": "smoke-order", "idempotency_key": "%s"}' "$key")
answer=$(grpcurl -plaintext -d "$request" "localhost:$grpc_port" payments.v1.PaymentService/RequestPayment)
echo "$answer"
payment_id=$(echo "$answer" | json_field paymentId)

echo "==> RequestPayment again with the same key (idempotent replay)"
again=$(grpcurl -plaintext -d "$request" "localhost:$grpc_port" payments.v1.PaymentService/RequestPayment)
[ "$(echo "$again" | json_field paymentId)" = "$payment_id" ] || { echo "replay created a new payment" >&2; exit 1; }

echo "==> GetPayment $payment_id"
payment=$(grpcurl -plaintext -d "{\"payment_id\": \"$payment_id\"}" \
  "localhost:$grpc_port" payments.v1.PaymentService/GetPayment)
echo "$payment"
[ "$(echo "$payment" | json_field paymentId)" = "$payment_id" ] || { echo "GetPayment differs" >&2; exit 1; }

echo "==> Prometheus has the release's series"
# A series the service itself exports (not just `up`, which exists even when scrapes fail).
query="count(grpc_server_handled_total{namespace=\"$namespace\",app_kubernetes_io_instance=\"$release\"})"
found=0
for _ in $(seq 1 30); do
  count=$(curl -fsS "localhost:$prometheus_port/api/v1/query" --data-urlencode "query=$query" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)')
  if [ "$count" != 0 ]; then found=1; echo "$count series"; break; fi
  sleep 2
done
[ "$found" = 1 ] || { echo "no series of $release in Prometheus" >&2; exit 1; }

echo "==> Jaeger has a trace of payments-service"
found=0
for _ in $(seq 1 30); do
  traces=$(curl -fsS "localhost:$jaeger_port/api/traces?service=payments-service&limit=5&lookback=1h" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("data") or []))' || echo 0)
  if [ "$traces" != 0 ]; then found=1; echo "$traces traces"; break; fi
  sleep 2
done
[ "$found" = 1 ] || { echo "no trace of payments-service in Jaeger" >&2; exit 1; }
echo "kind-smoke: all checks passed"
