"""The composition root: build the server from Settings, run it, shut it down gracefully."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from payments_service import __version__, payments_pb2, payments_pb2_grpc
from payments_service.config import ConfigurationError, Settings, load_settings, settings_help
from payments_service.domain.validation import SUPPORTED_CURRENCIES
from payments_service.observability.logging import configure_logging
from payments_service.observability.telemetry import Telemetry
from payments_service.readiness import ReadinessMonitor, SupportsPing
from payments_service.service import PaymentService
from payments_service.storage import PaymentRepository
from payments_service.storage.factory import create_repository
from payments_service.storage.migrate import run_migrations
from payments_service.transport.health_port import build_health_server
from payments_service.transport.server_options import maximum_concurrent_rpcs, server_options
from payments_service.transport.servicer import SERVICE_NAME, PaymentServicer
from payments_service.transport.tls import server_credentials

logger = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: The names the standard health service answers for: "" (the whole server) and the API.
HEALTH_SERVICES = ("", SERVICE_NAME)


@dataclass
class PaymentServer:
    """A built, not yet started server and the parts its lifecycle needs."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    repository: PaymentRepository
    #: The plaintext health-only server on HEALTH_PORT, when configured.
    health_server: grpc.Server | None = None
    health_port: int | None = None
    #: Follows the database for the API's readiness; None when the store is in memory.
    readiness: ReadinessMonitor | None = None
    #: Traces and metrics; /metrics starts with the server, spans are flushed at its stop.
    telemetry: Telemetry | None = None

    def start(self) -> None:
        """Start serving and report SERVING to health checks."""
        if self.telemetry is not None:
            self.telemetry.start()
        if self.health_server is not None:
            self.health_server.start()
        self.server.start()
        for name in HEALTH_SERVICES:
            if self.readiness is None or name != SERVICE_NAME:
                self.health.set(name, SERVING)
        if self.readiness is not None:
            self.readiness.start()  # SERVICE_NAME is SERVING while the database answers

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, let calls in flight finish within ``grace``."""
        self.health.enter_graceful_shutdown()  # first: probes must see it at once
        if self.readiness is not None:
            self.readiness.stop()  # may wait for a database ping in progress
        self.server.stop(grace).wait()
        if self.health_server is not None:
            self.health_server.stop(0).wait()
        self.repository.close()
        if self.telemetry is not None:
            self.telemetry.shutdown()


def build_server(
    settings: Settings,
    *,
    repository: PaymentRepository | None = None,
    telemetry: Telemetry | None = None,
) -> PaymentServer:
    """Wire the service together and bind its port (port 0 picks a free one)."""
    if telemetry is None:
        telemetry = Telemetry(settings)
    if repository is None:
        repository = create_repository(
            settings, tracer_provider=telemetry.tracer_provider, registry=telemetry.registry
        )
    logger.info("Creating PaymentService...")
    service = PaymentService(
        repository, telemetry.payment_observer(SUPPORTED_CURRENCIES, repository.count)
    )
    telemetry.prepare_methods(
        [
            f"/{SERVICE_NAME}/{m.name}"
            for m in payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].methods
        ]
    )

    health_servicer = health.HealthServicer()
    for name in HEALTH_SERVICES:
        health_servicer.set(name, NOT_SERVING)

    logger.info("Creating gRPC server with %d workers...", settings.max_workers)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.max_workers, thread_name_prefix="grpc-worker"
        ),
        # Outermost first: the server span, then the call interceptor (error mapping,
        # undecodable requests, metrics, access log), which sees every way a call ends.
        interceptors=telemetry.interceptors(),
        options=server_options(settings),
        maximum_concurrent_rpcs=maximum_concurrent_rpcs(settings),
    )
    logger.info("Adding PaymentService servicer to server...")
    payments_pb2_grpc.add_PaymentServiceServicer_to_server(
        PaymentServicer(service, health_servicer), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection_enabled:
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )

    address = f"{settings.host}:{settings.port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    logger.info("Server bound to %s:%d", settings.host, port)
    health_only = build_health_server(settings, health_servicer)
    return PaymentServer(
        server=server,
        port=port,
        health=health_servicer,
        repository=repository,
        health_server=health_only[0] if health_only else None,
        health_port=health_only[1] if health_only else None,
        readiness=_store_readiness(repository, health_servicer),
        telemetry=telemetry,
    )


def _store_readiness(
    repository: PaymentRepository, health_servicer: health.HealthServicer
) -> ReadinessMonitor | None:
    """A monitor turning the API's health NOT_SERVING while the store is unreachable."""
    if not isinstance(repository, SupportsPing):
        return None

    def report(ready: bool) -> None:
        health_servicer.set(SERVICE_NAME, SERVING if ready else NOT_SERVING)

    return ReadinessMonitor(repository.ping, report, name="database-readiness")


def serve(settings: Settings) -> None:
    """Run until SIGINT or SIGTERM, then shut down gracefully."""
    logger.info(
        "PaymentServer initialized (port=%d, workers=%d)", settings.port, settings.max_workers
    )
    logger.info("Starting payment microservice %s...", __version__)
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("Received signal %s, initiating shutdown...", signal.Signals(signum).name)
        stop_requested.set()

    # Before the port is bound: a signal during start-up then also ends in a clean stop.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    app = build_server(settings)
    app.start()
    logger.info("✓ Payment microservice started successfully on port %d", app.port)
    logger.info("Server is ready to accept requests")
    # Wake now and then: Python runs signal handlers only in the main thread, and a
    # signal the kernel hands to another thread would not interrupt an untimed wait.
    while not stop_requested.wait(timeout=0.5):
        pass

    logger.info("Stopping server (grace period: %gs)...", settings.grace_period_seconds)
    app.stop(settings.grace_period_seconds)
    logger.info("✓ Server stopped successfully")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="payments-service",
        description="The payments.v1.PaymentService gRPC server. "
        "Configured through environment variables only.",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands (default: serve)")
    commands.add_parser(
        "migrate",
        help="apply the database migrations to DATABASE_URL and exit (safe to repeat)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse the command line, read the settings, serve. Returns the exit status."""
    arguments = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"payments-service: {error}", file=sys.stderr)  # noqa: T201
        return 2
    configure_logging(settings.log_level, settings.log_format)
    if arguments.command == "migrate":
        return run_migrations(settings)
    if settings.migrate_on_startup and run_migrations(settings) != 0:
        return 1
    try:
        serve(settings)
    except RuntimeError as error:  # grpcio raises RuntimeError when the port cannot be bound
        logger.error("Cannot start: %s", error)
        return 1
    except OSError as error:  # METRICS_PORT cannot be bound
        logger.error("Cannot start the metrics endpoint: %s", error)
        return 1
    return 0


if __name__ == "__main__":
    # Re-import so loggers carry the module's real name, not "__main__".
    from payments_service.server import main as _main

    sys.exit(_main())
