"""The application service on the real in-memory store: created, replayed, conflict,
invalid, not found, and what the observer is told of each (no gRPC, no I/O)."""

from __future__ import annotations

import pytest

from payments_service.domain.errors import (
    IdempotencyKeyReusedError,
    PaymentNotFoundError,
    ValidationError,
)
from payments_service.domain.payment import PaymentRequest, PaymentStatus
from payments_service.service import PaymentOutcome, PaymentService
from payments_service.storage import InMemoryPaymentRepository


class Outcomes:
    """Records what a PaymentObserver is told."""

    def __init__(self) -> None:
        self.seen: list[tuple[PaymentOutcome, str]] = []

    def outcome(self, outcome: PaymentOutcome, request: PaymentRequest) -> None:
        self.seen.append((outcome, request.idempotency_key))


def _request(key: str = "key-00000001", amount: int = 1250, **metadata: str) -> PaymentRequest:
    return PaymentRequest(amount, "EUR", "order-1", key, metadata)


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


@pytest.fixture
def store() -> InMemoryPaymentRepository:
    return InMemoryPaymentRepository()


@pytest.fixture
def service(store: InMemoryPaymentRepository, outcomes: Outcomes) -> PaymentService:
    return PaymentService(store, outcomes)


async def test_a_new_key_creates_one_pending_payment(
    service: PaymentService, store: InMemoryPaymentRepository, outcomes: Outcomes
) -> None:
    result = await service.request_payment(_request(user="u-1"))
    assert result.created
    assert result.payment.status is PaymentStatus.PENDING
    assert dict(result.payment.metadata) == {"user": "u-1"}
    assert await store.get(result.payment.payment_id) == result.payment
    assert await store.count() == 1
    assert outcomes.seen == [(PaymentOutcome.CREATED, "key-00000001")]


async def test_the_same_request_again_replays_the_first_payment(
    service: PaymentService, store: InMemoryPaymentRepository, outcomes: Outcomes
) -> None:
    first = await service.request_payment(_request(b="2", a="1"))
    again = await service.request_payment(_request(a="1", b="2"))  # metadata order: same
    assert not again.created
    assert again.payment == first.payment
    assert await store.count() == 1
    assert [o for o, _ in outcomes.seen] == [PaymentOutcome.CREATED, PaymentOutcome.REPLAYED]


@pytest.mark.parametrize(
    "other",
    [
        _request(amount=999),
        PaymentRequest(1250, "USD", "order-1", "key-00000001"),
        PaymentRequest(1250, "EUR", "order-2", "key-00000001"),
        _request(note="changed"),
    ],
    ids=["amount", "currency", "order", "metadata"],
)
async def test_the_key_with_another_request_is_refused_and_changes_nothing(
    service: PaymentService,
    store: InMemoryPaymentRepository,
    outcomes: Outcomes,
    other: PaymentRequest,
) -> None:
    first = await service.request_payment(_request())
    with pytest.raises(IdempotencyKeyReusedError) as refused:
        await service.request_payment(other)
    assert refused.value.payment_id == first.payment.payment_id
    assert await store.count() == 1
    assert await store.get(first.payment.payment_id) == first.payment
    assert outcomes.seen[-1] == (PaymentOutcome.CONFLICT, "key-00000001")


async def test_an_invalid_request_stores_nothing_and_leaves_its_key_free(
    service: PaymentService, store: InMemoryPaymentRepository, outcomes: Outcomes
) -> None:
    with pytest.raises(ValidationError):
        await service.request_payment(_request(amount=0))
    assert await store.count() == 0
    assert outcomes.seen == [(PaymentOutcome.INVALID, "key-00000001")]
    created = await service.request_payment(_request())  # the key was never taken
    assert created.created


async def test_get_payment_answers_by_canonical_id(service: PaymentService) -> None:
    created = await service.request_payment(_request())
    payment_id = created.payment.payment_id
    assert await service.get_payment(payment_id.upper()) == created.payment
    assert await service.get_payment(f"urn:uuid:{payment_id}") == created.payment
    with pytest.raises(PaymentNotFoundError):
        await service.get_payment("550e8400-e29b-41d4-a716-446655440000")
    with pytest.raises(ValidationError):
        await service.get_payment("not-an-id")


async def test_without_an_observer_nothing_is_told_and_everything_works(
    store: InMemoryPaymentRepository,
) -> None:
    service = PaymentService(store)
    assert (await service.request_payment(_request())).created
    assert not (await service.request_payment(_request())).created
