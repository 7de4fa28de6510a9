// A client outside grpcio for the graceful-shutdown test (tests/integration/test_shutdown.py).
//
//   node shutdown_client.mjs --client grpc-js|connect --target 127.0.0.1:7000 \
//     --proto proto/payments.proto --descriptor-set payments.binpb \
//     --in-flight 24 --stream-ms 900 --interval-ms 10 --deadline-ms 10000
//
// grpc-js loads the .proto with proto-loader; Connect (@connectrpc/connect-node, gRPC
// protocol over HTTP/2) reads the same API from a FileDescriptorSet (protoc
// --include_imports --descriptor_set_out), as its generated code would embed it.
//
// 1. One PaymentService/Health call opens the connection.
// 2. --in-flight RequestPayment calls (a new key each) are started at once; then
//    {"event": "sent"} is printed.
// 3. When a line arrives on stdin (the test sends SIGTERM to the server soon after), a
//    stream of calls starts: one every --interval-ms for --stream-ms.
// 4. When every call has ended, one JSON line gives each call's gRPC code and duration,
//    and for the stream when it was sent (ms after the stream began):
//    {"event": "done", "in_flight": [{"code": "OK", "ms": 812}, ...],
//     "stream": [{"at": 0, "code": "OK", "ms": 790}, ...]}.
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { basename, dirname } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";

import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const SERVICE = "payments.v1.PaymentService";
// gRPC status codes by number (grpc-js and Connect both use these numbers).
const CODES = [
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
];

const { values: args } = parseArgs({
  options: {
    client: { type: "string", default: "grpc-js" },
    target: { type: "string" },
    proto: { type: "string" },
    "descriptor-set": { type: "string" },
    "in-flight": { type: "string", default: "24" },
    "stream-ms": { type: "string", default: "900" },
    "interval-ms": { type: "string", default: "10" },
    "deadline-ms": { type: "string", default: "10000" },
  },
});
const deadlineMs = Number(args["deadline-ms"]);

// Each returns a function (method, request) -> Promise of the call's numeric code.
function grpcJsCaller() {
  const definition = protoLoader.loadSync(basename(args.proto), {
    includeDirs: [dirname(args.proto)],
    keepCase: true,
    longs: String,
  });
  const Service = grpc.loadPackageDefinition(definition).payments.v1.PaymentService;
  const client = new Service(args.target, grpc.credentials.createInsecure());
  return (method, request) =>
    new Promise((resolve) => {
      client[method](request, { deadline: Date.now() + deadlineMs }, (error) =>
        resolve(error ? error.code : 0),
      );
    });
}

function connectCaller() {
  const set = fromBinary(FileDescriptorSetSchema, readFileSync(args["descriptor-set"]));
  const service = createFileRegistry(set).getService(SERVICE);
  const transport = createGrpcTransport({ baseUrl: `http://${args.target}` });
  const client = createClient(service, transport);
  const names = { Health: "health", RequestPayment: "requestPayment" };
  return (method, request) => {
    const message = {};
    if (request.amount_minor !== undefined) {
      message.amountMinor = BigInt(request.amount_minor);
      message.currency = request.currency;
      message.orderId = request.order_id;
      message.idempotencyKey = request.idempotency_key;
    }
    return client[names[method]](message, { timeoutMs: deadlineMs }).then(
      () => 0,
      (error) => ConnectError.from(error).code,
    );
  };
}

const call = args.client === "connect" ? connectCaller() : grpcJsCaller();

async function timed(name) {
  const started = performance.now();
  const code = await call("RequestPayment", {
    amount_minor: "100",
    currency: "EUR",
    order_id: `order-${args.client}`,
    idempotency_key: `${args.client}-${name}-${randomUUID()}`,
  });
  return { code: CODES[code] ?? String(code), ms: Math.round(performance.now() - started) };
}

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);

const opened = await call("Health", {});
if (opened !== 0) {
  print({ event: "error", message: `Health call failed: ${CODES[opened]}` });
  process.exit(1);
}
const inFlight = Array.from({ length: Number(args["in-flight"]) }, (_, i) => timed(`held-${i}`));
print({ event: "sent" });

const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => {
  lines.once("line", resolve);
  lines.once("close", resolve);
});
lines.close();
const stream = [];
const streamStart = performance.now();
for (let i = 0; performance.now() - streamStart < Number(args["stream-ms"]); i += 1) {
  const at = Math.round(performance.now() - streamStart);
  stream.push(timed(`stream-${i}`).then((ended) => ({ at, ...ended })));
  await new Promise((resolve) => setTimeout(resolve, Number(args["interval-ms"])));
}
print({ event: "done", in_flight: await Promise.all(inFlight), stream: await Promise.all(stream) });
process.exit(0);
