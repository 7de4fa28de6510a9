"""Business telemetry: payment outcomes, on the server span and in the metrics."""

from __future__ import annotations

from opentelemetry import trace

from payments_service.observability.metrics import OTHER_CURRENCY, PaymentMetrics


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

    def outcome(self, outcome: str, *, currency: str, amount_minor: int) -> None:
        """RequestPayment ended with ``outcome`` (created, replayed, conflict or invalid)."""
        shown = currency if currency in self._currencies else OTHER_CURRENCY
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "payments.outcome": outcome,
                    "payments.currency": shown,
                    "payments.amount_minor": amount_minor,
                }
            )
        if self._metrics is not None:
            self._metrics.record(outcome, shown, amount_minor)
