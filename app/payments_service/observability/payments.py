"""Business telemetry: payment outcomes on the server span and in the metrics."""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Iterator

from opentelemetry import trace
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from payments_service import __version__
from payments_service.domain.errors import StoreUnavailableError
from payments_service.domain.payment import PaymentRequest
from payments_service.service import PaymentOutcome

logger = logging.getLogger(__name__)

#: The currency label of a request whose currency is not a supported one (keeps it bounded).
OTHER_CURRENCY = "other"
#: A module constant: on Python 3.11 an attribute of an Enum class is looked up through
#: its metaclass's __getattr__ hook, at ten times the cost.
_CREATED = PaymentOutcome.CREATED


class PaymentMetrics(Collector):
    """payments_total by outcome and currency, amounts created, payments stored.

    Plain numbers changed on the event loop, rendered at scrape time (as the gRPC metrics).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        currencies: tuple[str, ...],
        stored_count: Callable[[], Awaitable[int]],
    ) -> None:
        labels = (*currencies, OTHER_CURRENCY)
        self._counts = {(outcome, currency): 0 for outcome in PaymentOutcome for currency in labels}
        self._amounts = dict.fromkeys(labels, 0)
        self._stored = math.nan
        self._stored_count = stored_count
        registry.register(self)

    def record(self, outcome: PaymentOutcome, currency: str, amount_minor: int) -> None:
        """Count one RequestPayment outcome (and its amount when a payment was created).

        ``currency`` must be a supported currency or :data:`OTHER_CURRENCY`.
        """
        self._counts[outcome, currency] += 1
        if outcome is _CREATED:
            self._amounts[currency] += amount_minor

    async def refresh(self) -> None:
        """Read the values that are read at scrape time (NaN while the store is down)."""
        try:
            self._stored = float(await self._stored_count())
        except StoreUnavailableError:  # the outage is logged by the readiness monitor
            self._stored = math.nan
        except Exception:  # a scrape must not fail because the store misbehaves
            logger.warning("Cannot count stored payments", exc_info=True)
            self._stored = math.nan

    def collect(self) -> Iterator[Metric]:
        payments = CounterMetricFamily(
            "payments",
            "RequestPayment calls by outcome (created, replayed, conflict, invalid) and currency.",
            labels=("outcome", "currency"),
        )
        for (outcome, currency), count in self._counts.items():
            payments.add_metric((outcome.value, currency), count)
        amount = CounterMetricFamily(
            "payments_amount_minor",
            "Sum of the amounts of created payments, in minor units of the currency.",
            labels=("currency",),
        )
        for currency, total in self._amounts.items():
            amount.add_metric((currency,), total)
        stored = GaugeMetricFamily(
            "payments_stored",
            "Payments in the store, read at each scrape (PostgreSQL: exact up to 100,000, "
            "then its estimate; the store is shared, so aggregate replicas with max).",
            value=self._stored,
        )
        build = InfoMetricFamily(
            "payments_service_build",
            "Version of the running service.",
            value={"version": __version__},
        )
        yield from (payments, amount, stored, build)


class PaymentTelemetry:
    """The :class:`~payments_service.service.PaymentObserver` the server installs.

    Span attributes are limited to the outcome, the currency and the amount: never ids,
    keys, order ids or metadata. The steps of a payment get no spans of their own: in
    process they take microseconds, and a span would cost more than the step; the store's
    queries, when they leave the process (PostgreSQL), get CLIENT spans from the store.
    """

    def __init__(
        self, metrics: PaymentMetrics | None, currencies: tuple[str, ...], *, traced: bool
    ) -> None:
        self._metrics = metrics
        self._currencies = frozenset(currencies)
        self._traced = traced  # False: no span exists to look up

    def outcome(self, outcome: PaymentOutcome, request: PaymentRequest) -> None:
        currency = request.currency if request.currency in self._currencies else OTHER_CURRENCY
        if self._traced:
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
