"""What every PaymentRepository must do. Runs unchanged against every implementation."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from payments_service.domain.payment import Payment, PaymentRequest, PaymentStatus
from payments_service.storage import PaymentRepository


def _payment(key: str = "key-00000001", amount: int = 1250, **metadata: str) -> Payment:
    request = PaymentRequest(
        amount_minor=amount,
        currency="EUR",
        order_id="order-1",
        idempotency_key=key,
        metadata=metadata,
    )
    return Payment.new(request, now=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC))


async def test_empty_repository_has_nothing(repository: PaymentRepository) -> None:
    assert await repository.count() == 0
    assert await repository.get(str(uuid.uuid4())) is None


async def test_inserted_payment_reads_back_field_for_field(repository: PaymentRepository) -> None:
    payment = _payment(user="user-789", note="ünïcode ✓")

    assert await repository.add_if_absent(payment) == payment

    stored = await repository.get(payment.payment_id)
    assert stored is not None
    assert stored.payment_id == payment.payment_id
    assert stored.idempotency_key == payment.idempotency_key
    assert stored.request_fingerprint == payment.request_fingerprint
    assert (stored.amount_minor, stored.currency, stored.order_id) == (1250, "EUR", "order-1")
    assert dict(stored.metadata) == {"user": "user-789", "note": "ünïcode ✓"}
    assert stored.status is PaymentStatus.PENDING
    assert stored.created_at == payment.created_at
    assert await repository.count() == 1


async def test_second_payment_with_same_key_returns_the_first(
    repository: PaymentRepository,
) -> None:
    first = _payment("shared-key-1")
    second = _payment("shared-key-1", amount=999)

    await repository.add_if_absent(first)
    winner = await repository.add_if_absent(second)

    assert winner.payment_id == first.payment_id
    assert winner.amount_minor == 1250
    assert await repository.get(second.payment_id) is None
    assert await repository.count() == 1


async def test_different_keys_make_different_payments(repository: PaymentRepository) -> None:
    a, b = _payment("key-aaaaaaaa"), _payment("key-bbbbbbbb")
    await repository.add_if_absent(a)
    await repository.add_if_absent(b)
    assert await repository.count() == 2
    assert await repository.get(a.payment_id) == a
    assert await repository.get(b.payment_id) == b


async def test_keys_are_case_sensitive(repository: PaymentRepository) -> None:
    await repository.add_if_absent(_payment("Key-ABCDEFGH"))
    await repository.add_if_absent(_payment("key-abcdefgh"))
    assert await repository.count() == 2


async def test_concurrent_inserts_with_one_key_store_exactly_one(
    repository: PaymentRepository,
) -> None:
    candidates = [_payment("race-key-0001") for _ in range(64)]
    # All at once: on PostgreSQL they share batches and race across statements.
    stored = await asyncio.gather(*(repository.add_if_absent(c) for c in candidates))
    winners = {payment.payment_id for payment in stored}

    assert len(winners) == 1
    assert await repository.count() == 1
    assert winners <= {c.payment_id for c in candidates}


async def test_any_valid_text_and_the_largest_amount_read_back_unchanged(
    repository: PaymentRepository,
) -> None:
    # Characters that JSON or SQL escape, tabs and newlines (metadata values may hold any
    # character but NUL), a non-BMP emoji, and the largest amount validation allows.
    odd = "quote \" backslash \\ tab \t newline \n apostrophe ' emoji \U0001f4b8"
    payment = _payment("key-odd-text", 99_999_999_999, **{'k"\\ey': odd, "empty": ""})

    assert await repository.add_if_absent(payment) == payment
    assert await repository.get(payment.payment_id) == payment
