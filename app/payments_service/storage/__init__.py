"""Payment stores: a small repository protocol and its implementations."""

from payments_service.storage.memory import InMemoryPaymentRepository
from payments_service.storage.repository import PaymentRepository

__all__ = ["InMemoryPaymentRepository", "PaymentRepository"]
