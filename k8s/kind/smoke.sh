#!/usr/bin/env bash
# make kind-smoke: through port-forwards, call the release with grpcurl (Health,
# RequestPayment, GetPayment), then find its series in Prometheus and its trace in Jaeger.
#   SMOKE_GRPC_PORT, SMOKE_PROMETHEUS_PORT, SMOKE_JAEGER_PORT   local ports (17000, 19090,
#   26686: not 16686, where the compose stack's Jaeger listens); each must be free.
set -euo pipefail

cluster=${CLUSTER:-payments}
context=kind-${cluster}
namespace=payments
release=payments-service
grpc_port=${SMOKE_GRPC_PORT:-17000}
prometheus_port=${SMOKE_PROMETHEUS_PORT:-19090}
jaeger_port=${SMOKE_JAEGER_PORT:-26686}
# Seconds each port-forward and each poll may take.
wait_seconds=${SMOKE_WAIT_SECONDS:-60}

for tool in kubectl grpcurl curl python3; do
  command -v "$tool" >/dev/null || { echo "kind-smoke needs $tool on PATH" >&2; exit 1; }
done

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

port_free() { python3 -c 'import socket,sys; socket.socket().bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
accepting() { (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# forward namespace service local remote: start a port-forward and wait until it accepts
# connections. A local port already taken (another stack's Jaeger, say) is an error: the
# checks would otherwise talk to whatever listens there.
forward() {
  local ns=$1 service=$2 local_port=$3 remote=$4
  port_free "$local_port" || {
    echo "localhost:$local_port is taken (set SMOKE_*_PORT to a free port for $service)" >&2
    exit 1
  }
  kubectl --context "$context" -n "$ns" port-forward "service/$service" "$local_port:$remote" >/dev/null &
  local pid=$!
  pids+=("$pid")
  local waited=0
  until accepting "$local_port"; do
    kill -0 "$pid" 2>/dev/null || { echo "port-forward to $ns/$service exited" >&2; exit 1; }
    [ "$waited" -lt "$wait_seconds" ] || { echo "port-forward to $ns/$service never accepted" >&2; exit 1; }
    sleep 1
    waited=$((waited + 1))
  done
}
forward "$namespace" "$release" "$grpc_port" 7000
forward monitoring prometheus "$prometheus_port" 9090
forward observability jaeger-query "$jaeger_port" 16686

# A field of a JSON answer; grpcurl spells it payment_id or paymentId depending on where it
# got the schema, so both spellings of the name are tried.
json_field() {
  python3 -c '
import json, re, sys
answer = json.load(sys.stdin)
snake = sys.argv[1]
camel = re.sub(r"_([a-z])", lambda m: m[1].upper(), snake)
print(answer.get(snake, answer.get(camel, "")))' "$1"
}

# poll description command...: run the command until it prints something other than 0 or
# nothing; a failed attempt (the server still starting, a dropped connection) is retried.
poll() {
  local what=$1 found="" waited=0
  shift
  while [ "$waited" -lt "$wait_seconds" ]; do
    found=$("$@" 2>/dev/null || true)
    if [ -n "$found" ] && [ "$found" != 0 ]; then echo "$found $what"; return 0; fi
    sleep 2
    waited=$((waited + 2))
  done
  echo "no $what after ${wait_seconds}s" >&2
  return 1
}

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
payment_id=$(echo "$answer" | json_field payment_id)
[ -n "$payment_id" ] || { echo "no payment id in the answer" >&2; exit 1; }

echo "==> RequestPayment again with the same key (idempotent replay)"
again=$(grpcurl -plaintext -d "$request" "localhost:$grpc_port" payments.v1.PaymentService/RequestPayment)
[ "$(echo "$again" | json_field payment_id)" = "$payment_id" ] || { echo "replay created a new payment" >&2; exit 1; }

echo "==> GetPayment $payment_id"
payment=$(grpcurl -plaintext -d "{\"payment_id\": \"$payment_id\"}" \
  "localhost:$grpc_port" payments.v1.PaymentService/GetPayment)
echo "$payment"
[ "$(echo "$payment" | json_field payment_id)" = "$payment_id" ] || { echo "GetPayment differs" >&2; exit 1; }

# A series the service itself exports (not just `up`, which exists even when scrapes fail).
query="count(grpc_server_handled_total{namespace=\"$namespace\",app_kubernetes_io_instance=\"$release\"})"
series() {
  curl -fsS "localhost:$prometheus_port/api/v1/query" --data-urlencode "query=$query" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'
}
traces() {
  curl -fsS "localhost:$jaeger_port/api/traces?service=payments-service&limit=5&lookback=1h" \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("data") or []))'
}
echo "==> Prometheus has the release's series"
poll "series of $release in Prometheus" series
echo "==> Jaeger has a trace of payments-service"
poll "traces of payments-service in Jaeger" traces
echo "kind-smoke: all checks passed"
