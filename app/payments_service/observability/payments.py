"""Business telemetry: child spans for the steps of a payment, and payment outcomes."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from opentelemetry import trace

from payments_service.observability.metrics import OTHER_CURRENCY, PaymentMetrics


class PaymentTelemetry:
    """The :class:`~payments_service.service.PaymentObserver` the server installs.

    Span attributes are limited to the outcome, the currency and the amount: never ids,
    keys, order ids or metadata.
    """

    def __init__(
        self,
        tracer: trace.Tracer | None,
        metrics: PaymentMetrics | None,
        currencies: tuple[str, ...],
    ) -> None:
        self._tracer = tracer
        self._metrics = metrics
        self._currencies = frozenset(currencies)

    def step(self, name: str) -> AbstractContextManager[object]:
        """A child span ``payments.<name>`` of the current span, e.g. validate or store."""
        if self._tracer is None or not trace.get_current_span().is_recording():
            return nullcontext()
        return self._tracer.start_as_current_span(f"payments.{name}", record_exception=False)

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
