"""Business telemetry: payment outcomes on the server span and in the metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from payments_service import __version__
from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import PaymentRequest
from payments_service.service import PaymentOutcome

logger = logging.getLogger(__name__)

#: The currency label of a request whose currency is not a supported one (keeps it bounded).
OTHER_CURRENCY = "other"


class PaymentMetrics:
    """payments_total by outcome and currency, amounts created, payments stored."""

    def __init__(
        self,
        registry: CollectorRegistry,
        currencies: tuple[str, ...],
        stored_count: Callable[[], Awaitable[int]],
    ) -> None:
        self.payments = Counter(
            "payments",
            "RequestPayment calls by outcome (created, replayed, conflict, invalid) and currency.",
            ("outcome", "currency"),
            registry=registry,
        )
        self.amount = Counter(
            "payments_amount_minor",
            "Sum of the amounts of created payments, in minor units of the currency.",
            ("currency",),
            registry=registry,
        )
        self._stored = Gauge(
            "payments_stored",
            "Payments in the store, read at each scrape (PostgreSQL: exact up to 100,000, "
            "then its estimate; the store is shared, so aggregate replicas with max).",
            registry=registry,
        )
        self._stored_count = stored_count
        build = Info("payments_service_build", "Version of the running service.", registry=registry)
        build.info({"version": __version__})
        for currency in (*currencies, OTHER_CURRENCY):
            self.amount.labels(currency)
            for outcome in PaymentOutcome:
                self.payments.labels(outcome.value, currency)

    def record(self, outcome: PaymentOutcome, currency: str, amount_minor: int) -> None:
        """Count one RequestPayment outcome (and its amount when a payment was created).

        ``currency`` must be a supported currency or :data:`OTHER_CURRENCY`.
        """
        self.payments.labels(outcome.value, currency).inc()
        if outcome is PaymentOutcome.CREATED:
            self.amount.labels(currency).inc(amount_minor)

    async def refresh(self) -> None:
        """Read the values that are read at scrape time (NaN while the store is down)."""
        try:
            value = float(await self._stored_count())
        except StoreUnavailableError:  # the outage is logged by the readiness monitor
            value = math.nan
        except Exception:  # a scrape must not fail because the store misbehaves
            logger.warning("Cannot count stored payments", exc_info=True)
            value = math.nan
        self._stored.set(value)


class PaymentTelemetry:
    """The :class:`~payments_service.service.PaymentObserver` the server installs.

    Span attributes are limited to the outcome, the currency and the amount: never ids,
    keys, order ids or metadata. The steps of a payment get no spans of their own: in
    process they take microseconds, and a span would cost more than the step; the store's
    queries, when they leave the process (PostgreSQL), get CLIENT spans from the store.
    """

    def __init__(self, metrics: PaymentMetrics | None, currencies: tuple[str, ...]) -> None:
        self._metrics = metrics
        self._currencies = frozenset(currencies)

    def outcome(self, outcome: PaymentOutcome, request: PaymentRequest) -> None:
        currency = request.currency if request.currency in self._currencies else OTHER_CURRENCY
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "payments.outcome": outcome.value,
                    "payments.currency": currency,
                    "payments.amount_minor": request.amount_minor,
                }
            )
        if self._metrics is not None:
            self._metrics.record(outcome, currency, request.amount_minor)
