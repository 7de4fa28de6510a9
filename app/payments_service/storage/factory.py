"""Choose and build the payment store that STORAGE_BACKEND names."""

from __future__ import annotations

import logging

from opentelemetry.trace import TracerProvider
from prometheus_client import CollectorRegistry

from payments_service.config import Settings
from payments_service.storage.memory import InMemoryPaymentRepository
from payments_service.storage.repository import PaymentRepository

logger = logging.getLogger(__name__)


def database_url(settings: Settings) -> str:
    """The DATABASE_URL in clear text, for connecting only: never log it."""
    if settings.database_url is None:
        raise ValueError("DATABASE_URL is not set")
    return settings.database_url.get_secret_value()


def create_repository(
    settings: Settings,
    *,
    tracer_provider: TracerProvider | None = None,
    registry: CollectorRegistry | None = None,
) -> PaymentRepository:
    """The store for ``settings``: in memory, or PostgreSQL through a connection pool.

    With PostgreSQL, queries become spans of ``tracer_provider`` and the pool's gauges
    are added to ``registry`` (the server's /metrics).
    """
    if settings.storage_backend == "memory":
        logger.info("Creating InMemoryPaymentRepository...")
        return InMemoryPaymentRepository()
    # Imported here so the memory backend never loads the database driver.
    from payments_service.storage.pool_metrics import PoolMetricsCollector
    from payments_service.storage.postgres import PostgresPaymentRepository

    logger.info(
        "Creating PostgresPaymentRepository (pool %d-%d, timeout %gs)...",
        settings.database_pool_min_size,
        settings.database_pool_max_size,
        settings.database_timeout_seconds,
    )
    repository = PostgresPaymentRepository(
        database_url(settings),
        min_size=settings.database_pool_min_size,
        max_size=settings.database_pool_max_size,
        timeout_seconds=settings.database_timeout_seconds,
        tracer_provider=tracer_provider,
    )
    if registry is not None:
        registry.register(PoolMetricsCollector(repository.pool_stats))
    return repository
