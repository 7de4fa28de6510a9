"""Hostile input: >= 10,000 generated requests against a running server.

Structured requests with arbitrary field values (unicode, control characters, huge and
negative numbers, oversized maps) and raw bytes that are no valid message at all, sent
through a generic channel call. Only documented codes may come back, never INTERNAL or
UNKNOWN; the server stays up; stored payments == distinct keys that were accepted.
"""

from __future__ import annotations

import collections
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payments_service import payments_pb2
from payments_service.domain.validation import SUPPORTED_CURRENCIES
from tests.support.network import free_port
from tests.support.servers import RunningServer, make_settings, running_server

REQUEST_PAYMENT = "/payments.v1.PaymentService/RequestPayment"
GET_PAYMENT = "/payments.v1.PaymentService/GetPayment"
DOCUMENTED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
#: Generated examples per kind. Each RequestPayment example is sent twice (the retry must
#: get the same answer) and each raw payload to both methods: >= 10,000 requests in all.
CASES = {"request_payment": 2500, "get_payment": 1000, "raw_bytes": 2000, "oversized": 20}


@dataclass
class Tally:
    """What came back: every code per kind, and the idempotency keys that were accepted."""

    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    accepted_keys: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)

    def record(self, kind: str, code: grpc.StatusCode, what: object) -> None:
        self.codes[f"{kind} {code.name}"] += 1
        if code not in DOCUMENTED and len(self.unexpected) < 20:
            self.unexpected.append(f"{kind} {code.name}: {what!r:.300}")


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[RunningServer, grpc.Channel]]:
    # Tracing off: it would double the CPU per call; the calls still pass the interceptor
    # that maps errors and counts metrics, and other tests cover what telemetry records.
    settings = make_settings(port=free_port(), max_workers=4, otel_sdk_disabled=True)
    with (
        running_server(settings) as app,
        grpc.insecure_channel(f"127.0.0.1:{app.port}") as channel,
    ):
        yield app, channel


def _call(channel: grpc.Channel, method: str, payload: bytes) -> grpc.StatusCode:
    """The status of a generic unary call sending raw bytes."""
    try:
        channel.unary_unary(method, None, None)(payload, timeout=10)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    return grpc.StatusCode.OK


# A small pool of keys makes replays and key reuse (FAILED_PRECONDITION) happen often.
pooled_keys = st.sampled_from([f"fuzz-pool-key-{i:04d}" for i in range(40)])
valid_keys = st.text(string.ascii_letters + string.digits + "-_:.", min_size=8, max_size=64)
keys = st.one_of(pooled_keys, valid_keys, st.text(max_size=300))
amounts = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=1, max_value=99_999_999_999),
    st.sampled_from([0, -1, 1, 99_999_999_999, 100_000_000_000, 2**63 - 1, -(2**63)]),
)
currencies = st.one_of(st.sampled_from(SUPPORTED_CURRENCIES), st.text(max_size=8))
order_ids = st.one_of(st.text(min_size=1, max_size=40), st.text(max_size=300))
metadata = st.one_of(
    st.dictionaries(st.text(max_size=45), st.text(max_size=40), max_size=8),
    # Oversized maps: too many entries, too long keys or values (cheap to generate).
    st.integers(min_value=51, max_value=300).map(lambda n: {f"k{i}": "v" for i in range(n)}),
    st.integers(min_value=41, max_value=200).map(lambda n: {"k" * n: "v"}),
    st.integers(min_value=501, max_value=20_000).map(lambda n: {"note": "\u00e9" * n}),
)
wild_requests = st.builds(
    payments_pb2.RequestPaymentRequest,
    amount_minor=amounts,
    currency=currencies,
    order_id=order_ids,
    idempotency_key=keys,
    metadata=metadata,
)
# Mostly valid requests, so that many are accepted and replays and key reuse happen.
readable = st.text(string.ascii_letters + string.digits + " -_/#äöüß€", min_size=1, max_size=30)
plausible_requests = st.builds(
    payments_pb2.RequestPaymentRequest,
    amount_minor=st.integers(min_value=1, max_value=99_999_999_999),
    currency=st.sampled_from(SUPPORTED_CURRENCIES),
    order_id=readable,
    idempotency_key=st.one_of(pooled_keys, valid_keys),
    metadata=st.dictionaries(readable, readable, max_size=3),
)
payment_requests = st.one_of(wild_requests, plausible_requests)
#: Over the 64 KiB limit: refused with RESOURCE_EXHAUSTED. Few cases: each costs ~0.2 s.
oversized_requests = st.builds(
    payments_pb2.RequestPaymentRequest,
    idempotency_key=valid_keys,
    metadata=st.integers(min_value=66_000, max_value=200_000).map(lambda n: {"blob": "x" * n}),
)
payment_ids = st.one_of(st.uuids().map(str), st.text(max_size=100))
raw_bytes = st.one_of(st.binary(max_size=512), st.binary(min_size=1, max_size=8))


def fuzz_settings(kind: str) -> settings:
    """Many examples, no per-example deadline (it is a network round trip), no database."""
    return settings(
        max_examples=CASES[kind],
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ~25 s on an idle 2-core machine; the margin is for machines busy with other work.
@pytest.mark.timeout(300)
def test_generated_requests_get_only_documented_codes(
    fuzz_target: tuple[RunningServer, grpc.Channel],
) -> None:
    app, channel = fuzz_target
    tally = Tally()

    @fuzz_settings("request_payment")
    @given(request=payment_requests)
    def request_payment(request: payments_pb2.RequestPaymentRequest) -> None:
        payload = request.SerializeToString()
        code = _call(channel, REQUEST_PAYMENT, payload)
        tally.record("RequestPayment", code, request)
        retry = _call(channel, REQUEST_PAYMENT, payload)
        tally.record("RequestPayment retry", retry, request)
        assert retry == code, f"a retry got {retry.name} after {code.name}"
        if code == grpc.StatusCode.OK:
            tally.accepted_keys.add(request.idempotency_key)

    @fuzz_settings("get_payment")
    @given(payment_id=payment_ids)
    def get_payment(payment_id: str) -> None:
        request = payments_pb2.GetPaymentRequest(payment_id=payment_id)
        code = _call(channel, GET_PAYMENT, request.SerializeToString())
        tally.record("GetPayment", code, payment_id)

    @fuzz_settings("raw_bytes")
    @given(payload=raw_bytes)
    def raw(payload: bytes) -> None:
        for method in (REQUEST_PAYMENT, GET_PAYMENT):
            code = _call(channel, method, payload)
            tally.record(f"raw-bytes {method.rsplit('/', 1)[1]}", code, payload)
            if code == grpc.StatusCode.OK and method == REQUEST_PAYMENT:
                parsed = payments_pb2.RequestPaymentRequest.FromString(payload)
                tally.accepted_keys.add(parsed.idempotency_key)

    @fuzz_settings("oversized")
    @given(request=oversized_requests)
    def oversized(request: payments_pb2.RequestPaymentRequest) -> None:
        code = _call(channel, REQUEST_PAYMENT, request.SerializeToString())
        tally.record("oversized", code, request.idempotency_key)

    request_payment()
    get_payment()
    raw()
    oversized()

    total = sum(tally.codes.values())
    print(f"\nfuzz: {total} generated requests; codes:")
    for name, count in sorted(tally.codes.items()):
        print(f"  {name:<45} {count}")
    print(f"  accepted distinct keys: {len(tally.accepted_keys)}")
    assert total >= 10_000
    assert tally.unexpected == []
    assert tally.codes["raw-bytes RequestPayment INVALID_ARGUMENT"] > 0
    assert tally.codes["oversized RESOURCE_EXHAUSTED"] == CASES["oversized"]
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert app.count() == len(tally.accepted_keys)
