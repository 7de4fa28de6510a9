"""What every PaymentRepository must do. Runs unchanged against every implementation."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
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


def test_empty_repository_has_nothing(repository: PaymentRepository) -> None:
    assert repository.count() == 0
    assert repository.get(str(uuid.uuid4())) is None


def test_inserted_payment_reads_back_field_for_field(repository: PaymentRepository) -> None:
    payment = _payment(user="user-789", note="ünïcode ✓")

    assert repository.add_if_absent(payment) == payment

    stored = repository.get(payment.payment_id)
    assert stored is not None
    assert stored.payment_id == payment.payment_id
    assert stored.idempotency_key == payment.idempotency_key
    assert stored.request_fingerprint == payment.request_fingerprint
    assert (stored.amount_minor, stored.currency, stored.order_id) == (1250, "EUR", "order-1")
    assert dict(stored.metadata) == {"user": "user-789", "note": "ünïcode ✓"}
    assert stored.status is PaymentStatus.PENDING
    assert stored.created_at == payment.created_at
    assert repository.count() == 1


def test_second_payment_with_same_key_returns_the_first(repository: PaymentRepository) -> None:
    first = _payment("shared-key-1")
    second = _payment("shared-key-1", amount=999)

    repository.add_if_absent(first)
    winner = repository.add_if_absent(second)

    assert winner.payment_id == first.payment_id
    assert winner.amount_minor == 1250
    assert repository.get(second.payment_id) is None
    assert repository.count() == 1


def test_different_keys_make_different_payments(repository: PaymentRepository) -> None:
    a, b = _payment("key-aaaaaaaa"), _payment("key-bbbbbbbb")
    repository.add_if_absent(a)
    repository.add_if_absent(b)
    assert repository.count() == 2
    assert repository.get(a.payment_id) == a
    assert repository.get(b.payment_id) == b


def test_keys_are_case_sensitive(repository: PaymentRepository) -> None:
    repository.add_if_absent(_payment("Key-ABCDEFGH"))
    repository.add_if_absent(_payment("key-abcdefgh"))
    assert repository.count() == 2


def test_concurrent_inserts_with_one_key_store_exactly_one(
    repository: PaymentRepository,
) -> None:
    candidates = [_payment("race-key-0001") for _ in range(64)]
    barrier = threading.Barrier(16)

    def insert(payment: Payment) -> str:
        # Release the calls in waves of 16 so they really collide.
        barrier.wait(timeout=5)
        return repository.add_if_absent(payment).payment_id

    with ThreadPoolExecutor(max_workers=16) as pool:
        winners = set(pool.map(insert, candidates))

    assert len(winners) == 1
    assert repository.count() == 1
    assert winners <= {c.payment_id for c in candidates}


def test_any_valid_text_and_the_largest_amount_read_back_unchanged(
    repository: PaymentRepository,
) -> None:
    # Characters that JSON or SQL escape, tabs and newlines (metadata values may hold any
    # character but NUL), a non-BMP emoji, and the largest amount validation allows.
    odd = "quote \" backslash \\ tab \t newline \n apostrophe ' emoji \U0001f4b8"
    payment = _payment("key-odd-text", 99_999_999_999, **{'k"\\ey': odd, "empty": ""})

    assert repository.add_if_absent(payment) == payment
    assert repository.get(payment.payment_id) == payment
