"""OTLP/gRPC span export with a direct protobuf encoder.

The stock exporter turns every span into a tree of protobuf objects (a KeyValue and an
AnyValue per attribute, ...): about as much CPU per span as a whole bare call. Here the
bytes of the ``ExportTraceServiceRequest`` are written directly (the wire format of
opentelemetry-proto's trace.proto), and attribute fields that repeat from span to span
(rpc.system, rpc.service, the db.* of the store) are encoded once and reused. The exporter
is otherwise the stock one: endpoint, headers, TLS, compression, timeouts and retries.

Two things of the stock exporter are relied on beyond its public interface, both pinned
by tests (tests/unit/test_otlp.py) that fail on an incompatible release:
``OTLPSpanExporter._translate_data(spans)`` builds the request of each export attempt, and
our bytes must parse into the very message the stock ``encode_spans`` builds.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as StockOTLPSpanExporter,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

#: trace.proto's SpanFlags: the "has is_remote" bit is always set; "is remote" with a
#: remote parent (as the stock encoder sets them).
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
_KIND = {
    SpanKind.INTERNAL: 1,
    SpanKind.SERVER: 2,
    SpanKind.CLIENT: 3,
    SpanKind.PRODUCER: 4,
    SpanKind.CONSUMER: 5,
}
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_DOUBLE = struct.Struct("<d")
#: Encoded key/value pairs kept for reuse; cleared when full (values that vary, such as a
#: peer port, come and go).
_KEY_VALUE_CACHE_SIZE = 4096
_key_values: dict[tuple[int, str, type, Any], bytes] = {}


#: The one-byte varints, prebuilt (lengths and small numbers are nearly always below 128).
_SMALL = [bytes((n,)) for n in range(0x80)]


def _varint(value: int) -> bytes:
    if 0 <= value < 0x80:
        return _SMALL[value]
    if value < 0:
        value += 1 << 64  # int64: two's complement in ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with ``tag`` = field number << 3 | 2."""
    return _SMALL[tag] + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """common.proto's AnyValue (its oneof is written even when the value is the default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(0x0A, value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(0x3A, value)
    if isinstance(value, Sequence):
        return _field(0x2A, b"".join(_field(0x0A, _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(0x32, b"".join(_field(0x0A, _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode a {type(value).__name__} attribute value")


def _key_value(key: str, value: Any) -> bytes:
    return _field(0x0A, key.encode()) + _field(0x12, _any_value(value))


def _attributes(tag: int, attributes: Mapping[str, Any] | None) -> bytes:
    """Each pair as a repeated KeyValue field ``tag``; scalars are cached by (tag, key,
    value) (with the value's type: 1 and True are equal in Python, not in protobuf)."""
    if not attributes:
        return b""
    cache = _key_values
    parts = []
    for key, value in attributes.items():
        cache_key = (tag, key, value.__class__, value)
        try:
            parts.append(cache[cache_key])
        except KeyError:
            encoded = cache[cache_key] = _field(tag, _key_value(key, value))
            parts.append(encoded)
            if len(cache) > _KEY_VALUE_CACHE_SIZE:
                cache.clear()
        except TypeError:  # an unhashable value (a list): encoded each time
            parts.append(_field(tag, _key_value(key, value)))
    return b"".join(parts)


#: Fields that repeat from span to span, encoded once: (name, kind) and (status).
_names: dict[tuple[str, SpanKind], bytes] = {}
_statuses: dict[tuple[StatusCode, str | None], bytes] = {}
_FLAGS = {
    False: b"\x85\x01" + _FIXED32.pack(_HAS_IS_REMOTE),
    True: b"\x85\x01" + _FIXED32.pack(_HAS_IS_REMOTE | _IS_REMOTE),
}


def _name_and_kind(name: str, kind: SpanKind) -> bytes:
    try:
        return _names[name, kind]
    except KeyError:
        if len(_names) > _KEY_VALUE_CACHE_SIZE:
            _names.clear()
        encoded = _names[name, kind] = _field(0x2A, name.encode()) + b"\x30" + _varint(_KIND[kind])
        return encoded


def _status(code: StatusCode, description: str | None) -> bytes:
    try:
        return _statuses[code, description]
    except KeyError:
        if len(_statuses) > _KEY_VALUE_CACHE_SIZE:
            _statuses.clear()
        body = _field(0x12, description.encode()) if description else b""
        if code.value:
            body += b"\x18" + _varint(code.value)
        encoded = _statuses[code, description] = _field(0x7A, body)
        return encoded


def _span(span: ReadableSpan) -> bytes:
    context = span.context
    parent = span.parent
    parts = [
        b"\x0a\x10",
        context.trace_id.to_bytes(16, "big"),
        b"\x12\x08",
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        trace_state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        parts.append(_field(0x1A, trace_state.encode()))
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts += (
        _name_and_kind(span.name, span.kind),
        b"\x39",
        (span.start_time or 0).to_bytes(8, "little"),
        b"\x41",
        (span.end_time or 0).to_bytes(8, "little"),
        _attributes(0x4A, span.attributes),
    )
    if span.dropped_attributes:
        parts.append(b"\x50" + _varint(span.dropped_attributes))
    for event in span.events:
        encoded = b"\x09" + _FIXED64.pack(event.timestamp) + _field(0x12, event.name.encode())
        encoded += _attributes(0x1A, event.attributes)
        if event.dropped_attributes:
            encoded += b"\x20" + _varint(event.dropped_attributes)
        parts.append(_field(0x5A, encoded))
    if span.dropped_events:
        parts.append(b"\x60" + _varint(span.dropped_events))
    if span.links:  # the service makes none; the stock encoder's spelling is not needed
        raise TypeError("span links are not encoded here")
    status = span.status
    parts += (
        _status(status.status_code, status.description),
        _FLAGS[parent is not None and parent.is_remote],
    )
    return _field(0x12, b"".join(parts))


def encode_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The ``ExportTraceServiceRequest`` of ``spans`` as bytes, grouped by resource and by
    instrumentation scope (each the same object for all spans of one TracerProvider)."""
    grouped: dict[int, tuple[Any, dict[int, tuple[Any, list[bytes]]]]] = {}
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        scopes = grouped.setdefault(id(resource), (resource, {}))[1]
        scopes.setdefault(id(scope), (scope, []))[1].append(_span(span))
    out = []
    for resource, scopes in grouped.values():
        body = _field(0x0A, _attributes(0x0A, resource.attributes))
        for scope, encoded in scopes.values():
            scope_fields = b""
            if scope is not None:
                scope_fields = _field(0x0A, scope.name.encode()) if scope.name else b""
                if scope.version:
                    scope_fields += _field(0x12, scope.version.encode())
                scope_fields += _attributes(0x1A, scope.attributes)
            scope_spans = _field(0x0A, scope_fields) + b"".join(encoded)
            if scope is not None and scope.schema_url:
                scope_spans += _field(0x1A, scope.schema_url.encode())
            body += _field(0x12, scope_spans)
        if resource.schema_url:
            body += _field(0x1A, resource.schema_url.encode())
        out.append(_field(0x0A, body))
    return b"".join(out)


class OTLPSpanExporter(StockOTLPSpanExporter):
    """The stock OTLP/gRPC span exporter with :func:`encode_spans` as its encoder."""

    def _translate_data(self, data: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
        # Parsing in protobuf's C code costs a fraction of building the message in Python.
        return ExportTraceServiceRequest.FromString(encode_spans(data))
