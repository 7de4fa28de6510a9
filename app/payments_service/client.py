"""A small command-line client: `payments-client health|request|get`, printing JSON.

It imports only grpc and the generated code so it starts fast: the Docker health
check, the compose test client and the Helm test pod all run it. Plaintext by default;
``--tls`` (or ``--ca``) speaks TLS, ``--cert`` and ``--key`` add a client certificate
for mutual TLS.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from payments_service import __version__, payments_pb2, payments_pb2_grpc

EXIT_RPC_ERROR = 1
EXIT_NOT_SERVING = 3


def _print(message: Message) -> None:
    print(
        json.dumps(
            json_format.MessageToDict(message, preserving_proto_field_name=True),
            indent=2,
            ensure_ascii=False,
        )
    )


def _metadata_pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key, value


def _pem_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {error.strerror}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payments-client",
        description="Call payments.v1.PaymentService and print the answer as JSON. "
        "Exit status: 0 OK, 1 the call failed (code, message and field violations "
        "are printed to stderr), 2 bad usage, 3 health is not SERVING.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--target", default="localhost:7000", help="host:port of the server (default: %(default)s)"
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)"
    )
    tls = parser.add_argument_group(
        "TLS", "Plaintext unless one of these is given; they go before the command."
    )
    tls.add_argument(
        "--tls",
        action="store_true",
        help="connect over TLS, trusting the system's CA certificates (or those of --ca)",
    )
    # dest tls_*: `request --key` is the idempotency key, on the same namespace.
    tls.add_argument(
        "--ca",
        dest="tls_ca",
        type=_pem_file,
        metavar="FILE",
        help="PEM CA certificate(s) the server's certificate must come from (implies --tls)",
    )
    tls.add_argument(
        "--cert",
        dest="tls_cert",
        type=_pem_file,
        metavar="FILE",
        help="PEM client certificate chain, for servers that require one (mutual TLS); "
        "needs --key, implies --tls",
    )
    tls.add_argument(
        "--key", dest="tls_key", type=_pem_file, metavar="FILE", help="PEM private key of --cert"
    )
    tls.add_argument(
        "--authority",
        metavar="NAME",
        help="the server name to check its certificate against and to send as :authority "
        "(default: the host of --target)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    health = commands.add_parser("health", help="ask the standard grpc.health.v1 service")
    health.add_argument(
        "--service",
        default="",
        help='service to ask about: "" (default) is the whole server, '
        "payments.v1.PaymentService is readiness",
    )

    request = commands.add_parser("request", help="request a payment (idempotent)")
    request.add_argument("--amount", type=int, required=True, help="amount in minor units")
    request.add_argument("--currency", required=True, help="USD, EUR, GBP, JPY, CAD or AUD")
    request.add_argument("--order", required=True, help="order id")
    request.add_argument(
        "--key", help="idempotency key (default: a new random one; reuse it to retry safely)"
    )
    request.add_argument(
        "--meta",
        type=_metadata_pair,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="metadata entry; repeat for more",
    )

    get = commands.add_parser("get", help="show one payment")
    get.add_argument("payment_id", help="the payment's id (a UUID)")
    return parser


def _call(channel: grpc.Channel, args: argparse.Namespace) -> tuple[Message, int]:
    if args.command == "health":
        health_stub = health_pb2_grpc.HealthStub(channel)
        answer = health_stub.Check(
            health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
        )
        serving = answer.status == health_pb2.HealthCheckResponse.SERVING
        return answer, 0 if serving else EXIT_NOT_SERVING
    stub = payments_pb2_grpc.PaymentServiceStub(channel)
    if args.command == "request":
        response: Message = stub.RequestPayment(
            payments_pb2.RequestPaymentRequest(
                amount_minor=args.amount,
                currency=args.currency,
                order_id=args.order,
                idempotency_key=args.key or f"cli-{uuid.uuid4()}",
                metadata=dict(args.meta),
            ),
            timeout=args.timeout,
        )
        return response, 0
    return stub.GetPayment(
        payments_pb2.GetPaymentRequest(payment_id=args.payment_id), timeout=args.timeout
    ), 0


def describe_rpc_error(error: grpc.RpcError) -> dict[str, Any]:
    """Code, message and any ErrorInfo / BadRequest details of a failed call."""
    call: Any = error
    described: dict[str, Any] = {"code": call.code().name, "message": call.details()}
    status = rpc_status.from_call(call)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            described["field_violations"] = [
                {"field": v.field, "description": v.description}
                for v in bad_request.field_violations
            ]
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            described["reason"] = info.reason
            if info.metadata:
                described["error_metadata"] = dict(info.metadata)
    return described


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A plaintext channel to --target, or a TLS one when a TLS option is given."""
    options = []
    if args.authority:
        options.append(("grpc.default_authority", args.authority))
    if not (args.tls or args.tls_ca or args.tls_cert):
        return grpc.insecure_channel(args.target, options=options)
    if args.authority:
        options.append(("grpc.ssl_target_name_override", args.authority))
    credentials = grpc.ssl_channel_credentials(
        root_certificates=args.tls_ca, private_key=args.tls_key, certificate_chain=args.tls_cert
    )
    return grpc.secure_channel(args.target, credentials, options=options)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--cert and --key go together (a client certificate and its key)")
    with _channel(args) as channel:
        try:
            answer, status = _call(channel, args)
        except grpc.RpcError as error:
            print(json.dumps({"error": describe_rpc_error(error)}, indent=2), file=sys.stderr)
            return EXIT_RPC_ERROR
    _print(answer)
    return status


if __name__ == "__main__":
    sys.exit(main())
