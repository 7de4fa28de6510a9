"""What every call passes through, once: what gRPC itself does not decide.

Every method handler is wrapped once, when its service is added to the server
(:func:`add_guarded`), not per call by an interceptor. For every method, of every service
on the server (the API, health, reflection):

- request bytes that do not decode are the client's fault: INVALID_ARGUMENT, where
  grpcio would answer UNKNOWN or INTERNAL and log a traceback per call;
- a :class:`DomainError` becomes its status (:mod:`payments_service.transport.errors`),
  anything else is logged once and answered INTERNAL with a generic message.

For unary calls also:

- admission (:class:`CallGate`): at most MAX_CONCURRENT_RPCS calls in progress or waiting
  their turn (more get RESOURCE_EXHAUSTED at once), at most MAX_WORKERS handled at once,
  and UNAVAILABLE for calls that arrive once a graceful shutdown has begun;
- a :class:`CallObserver` learns how each call ended (telemetry plugs in there).

Unary methods are served as stream-unary ones (the same bytes on the wire) so that the
guard reads the request itself: grpc.aio's unary path leaves a call whose client ends its
stream without a message unanswered for good; here it gets INVALID_ARGUMENT. A call counts
only once its request message has arrived: a client that opens a stream and never sends
its message holds no slot and no thread (the guard waits for it on the loop).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeAlias

import grpc

from payments_service.domain.errors import DomainError, FieldViolation, ValidationError
from payments_service.transport.errors import (
    expired_status,
    internal_status,
    overloaded_status,
    shutting_down_status,
    status_for,
)

logger = logging.getLogger(__name__)

#: A module constant: on Python 3.11 an attribute of an Enum class is looked up through
#: its metaclass's __getattr__ hook, at ten times the cost.
_OK = grpc.StatusCode.OK

Context = grpc.aio.ServicerContext[Any, Any]
Unary = Callable[[Any, Context], Awaitable[Any]]
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]


class MethodObserver(Protocol):
    """What telemetry learns about the calls of one method."""

    def started(self, context: Context) -> Any:
        """A call's request arrived; returns what :meth:`ended` is to be given."""
        ...

    def ended(
        self,
        call: Any,
        context: Context,
        code: grpc.StatusCode,
        error: BaseException | None = None,
    ) -> None:
        """The call ``started`` returned ``call`` for ended with ``code``; ``error`` is the
        unexpected exception that ended it, if one did."""
        ...


class CallObserver(Protocol):
    def for_method(self, method: str) -> MethodObserver | None:
        """The observer of ``/package.Service/Method`` (None: nothing to record)."""
        ...


class UndecodableRequest:
    """Stands in for a request whose bytes could not be decoded."""

    __slots__ = ()


_UNDECODABLE = UndecodableRequest()


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering :class:`UndecodableRequest` where it would raise."""
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception:  # any decoding failure is the client's fault
            return _UNDECODABLE

    return deserialize


def _missing_request(method: str) -> ValidationError:
    return ValidationError(
        [FieldViolation("request", f"is missing: the call to {method} ended without one")]
    )


def _undecodable(method: str) -> ValidationError:
    return ValidationError(
        [FieldViolation("request", f"is not a valid request message for {method}")]
    )


#: The event loop has caught up with the calls clients sent when no task started or ended
#: during this long a sleep (grpc.aio starts a task the moment it takes a call up, before
#: its request arrives).
CAUGHT_UP_SECONDS = 0.002
#: The ports close only after this long a quiet (or at the grace period's end): grpc core
#: cancels a call that reaches it once its server stops (CANCELLED, where every later call
#: gets UNAVAILABLE). It is ten times Python's GIL switch interval (5 ms): a client whose
#: threads contend for the GIL may wait several of those before it sends its next call.
CLOSE_QUIET_SECONDS = 0.05
#: At most this long after a drain begins, calls taken up are still served (the backlog
#: clients had sent before it began); later ones are refused.
DRAIN_SERVE_LIMIT_SECONDS = 1.0


#: What CallGate.admit answers a call that must wait for a worker.
WAIT = object()


class CallGate:
    """Admission of unary calls: the concurrency cap, the handlers at once, the drain."""

    def __init__(self, *, cap: int | None, workers: int) -> None:
        self._cap = cap
        self._free = workers
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        #: Calls admitted and not finished: handled now, or waiting for a worker.
        self.admitted = 0
        # Calls refused because a drain had begun (what a drain watches for quiet).
        self._refused = 0

    def admit(self) -> grpc.Status | object | None:
        """Let a call whose request has arrived in: None when a worker is free for it at
        once; :data:`WAIT` when it must ``await`` :meth:`turn` first (either way
        :meth:`leave` must follow); or the status it is refused with."""
        if self._draining:
            self._refused += 1
            return shutting_down_status()
        if self._cap is not None and self.admitted >= self._cap:
            return overloaded_status(self._cap)
        if not self.admitted:
            self._idle.clear()
        self.admitted += 1
        if self._free:
            self._free -= 1
            return None
        return WAIT

    async def turn(self) -> None:
        """Wait until a worker is handed to this call (raises CancelledError if the call
        ends meanwhile; then it has left already)."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.cancelled():
                self._waiting.remove(waiter)
                self._left()
            else:  # handed a worker in the same instant: pass it on
                self.leave()
            raise

    def leave(self) -> None:
        """The call is done: its worker goes to the next call waiting, if any."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                break
        else:
            self._free += 1
        self._left()

    def _left(self) -> None:
        self.admitted -= 1
        if not self.admitted:
            self._idle.set()

    async def drain(self, grace: float) -> bool:
        """Prepare a graceful shutdown; False if ``grace`` ran out with calls unfinished.

        1. Calls keep being served until the loop has caught up with what clients had
           sent (at most :data:`DRAIN_SERVE_LIMIT_SECONDS`).
        2. From then on calls are refused with UNAVAILABLE, and the admitted ones finish.
        3. It returns once no call has come for :data:`CLOSE_QUIET_SECONDS`, so that the
           caller can stop the gRPC server at once (grpc core cancels the calls it holds
           then, and those that reach it afterwards).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        await self._quiet(CAUGHT_UP_SECONDS, min(deadline, loop.time() + DRAIN_SERVE_LIMIT_SECONDS))
        self._draining = True
        if not self._idle.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
        await self._quiet(CLOSE_QUIET_SECONDS, deadline)
        return True

    async def _quiet(self, seconds: float, until: float) -> None:
        """Return once ``seconds`` pass in which no task started or ended and no call was
        refused, or at ``until``."""
        loop = asyncio.get_running_loop()
        tasks = asyncio.all_tasks()  # held: no new task can take the place of one of these
        refused = self._refused
        quiet_since = loop.time()
        while loop.time() < until:
            await asyncio.sleep(CAUGHT_UP_SECONDS)
            for _ in range(3):  # what woke the loop meanwhile becomes a task by now
                await asyncio.sleep(0)
            now = asyncio.all_tasks()
            if now != tasks or self._refused != refused:
                tasks, refused, quiet_since = now, self._refused, loop.time()
            elif loop.time() - quiet_since >= seconds:
                return


def _final_code(context: Context) -> grpc.StatusCode:
    code: grpc.StatusCode | None = context.code()
    return _OK if code is None else code


def _expired(context: Context) -> bool:
    remaining = context.time_remaining()
    return remaining is not None and remaining <= 0


def _cancelled_code(context: Context) -> grpc.StatusCode:
    """Why grpc.aio cancelled a call's handler: its deadline passed, or the client left."""
    return grpc.StatusCode.DEADLINE_EXCEEDED if _expired(context) else grpc.StatusCode.CANCELLED


async def _end(
    context: Context,
    observer: MethodObserver | None,
    call: Any,
    status: grpc.Status,
    error: BaseException | None = None,
) -> None:
    """End the call with ``status`` (grpc.aio's abort raises AbortError, as it must)."""
    if observer is not None:
        observer.ended(call, context, status.code, error)
    await context.abort(status.code, status.details, status.trailing_metadata)


def guard_unary(
    method: str,
    behaviour: Unary,
    *,
    gate: CallGate | None,
    observer: MethodObserver | None,
) -> Unary:
    """Wrap a unary handler: admission, decoding, error mapping, and telling ``observer``."""

    async def handle(_requests: Any, context: Context) -> Any:
        request = await context.read()
        call = observer.started(context) if observer is not None else None
        if request is grpc.aio.EOF:  # type: ignore[attr-defined]  # grpc-stubs lacks it
            return await _end(context, observer, call, status_for(_missing_request(method)))
        admission = gate.admit() if gate is not None else None
        # None first: the common case skips isinstance, dear for an abc such as grpc.Status.
        if admission is not None and isinstance(admission, grpc.Status):
            return await _end(context, observer, call, admission)
        try:
            if admission is WAIT and gate is not None:
                await gate.turn()  # raises CancelledError if the call ends while it waits
                if _expired(context):  # grpc may not have cancelled it yet: do no work
                    gate.leave()
                    return await _end(context, observer, call, expired_status())
            try:
                if request is _UNDECODABLE:
                    raise _undecodable(method)
                response = await behaviour(request, context)
            finally:
                if gate is not None:
                    gate.leave()
        except DomainError as error:
            return await _end(context, observer, call, status_for(error))
        except grpc.aio.AbortError:  # the handler ended the call itself
            if observer is not None:
                observer.ended(call, context, _final_code(context))
            raise
        except asyncio.CancelledError:
            if observer is not None:
                observer.ended(call, context, _cancelled_code(context))
            raise
        except Exception as error:
            logger.exception("Unexpected error in %s", method)
            return await _end(context, observer, call, internal_status(), error)
        if observer is not None:  # handlers end other calls by raising or aborting
            observer.ended(call, context, _OK)
        return response

    return handle


def guard_stream(method: str, handler: Handler) -> Callable[[Any, Context], Awaitable[None]]:
    """Wrap a streaming handler (health Watch, reflection): decoding and error mapping."""
    # grpc-stubs type handlers as the sync server's; on grpc.aio they are coroutines.
    inner: Callable[[Any, Context], Any] = handler.unary_stream or handler.stream_stream  # type: ignore[assignment]
    request_streaming = handler.request_streaming

    async def checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if request is _UNDECODABLE:
                raise _undecodable(method)
            yield request

    async def handle(request: Any, context: Context) -> None:
        try:
            if request_streaming:
                request = checked(request)
            elif request is _UNDECODABLE:
                raise _undecodable(method)
            produced = inner(request, context)
            if inspect.isasyncgen(produced):
                async for response in produced:
                    await context.write(response)
            else:
                await produced
        except DomainError as error:
            status = status_for(error)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:
            logger.exception("Unexpected error in %s", method)
            status = internal_status()
        else:
            return
        await context.abort(status.code, status.details, status.trailing_metadata)

    return handle


class _Registrar:
    """Stands in for the server the generated ``add_*Servicer_to_server`` functions
    register with: each method handler is guarded once, then added to the real server.

    grpc.aio's serving loop waits on one pending request per *registered* method, every
    call; so only the API's own methods are registered (``hot``), and the others (health,
    reflection) are served through the generic handlers, looked up when they are called.
    """

    def __init__(
        self, server: grpc.aio.Server, guard: Callable[[str, Handler], Handler], hot: bool
    ) -> None:
        self._server = server
        self._guard = guard
        self._hot = hot
        self.unmatched: set[str] = set()

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        # Replaced by the guarded handlers below; noted to check that they come.
        self.unmatched.update(handler.service_name() for handler in handlers)

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Handler]) -> None:
        guarded = {name: self._guard(f"/{service}/{name}", h) for name, h in handlers.items()}
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, guarded),)
        )
        if self._hot:
            self._server.add_registered_method_handlers(service, guarded)  # type: ignore[attr-defined]
        self.unmatched.discard(service)


def add_guarded(
    server: grpc.aio.Server,
    add_to_server: Callable[[Any, Any], None],
    servicer: object,
    *,
    gate: CallGate | None = None,
    observer: CallObserver | None = None,
    hot: bool = False,
) -> None:
    """``add_to_server(servicer, server)`` (a generated ``add_*Servicer_to_server``), each
    method guarded (:func:`guard_unary`, :func:`guard_stream`); ``hot`` services are also
    registered for grpc.aio's fast path."""

    def guard(method: str, handler: Handler) -> Handler:
        deserializer = _tolerant(handler.request_deserializer)
        serializer = handler.response_serializer
        if handler.unary_unary is not None:
            behaviour: Unary = handler.unary_unary  # type: ignore[assignment]
            watcher = observer.for_method(method) if observer is not None else None
            return grpc.stream_unary_rpc_method_handler(
                guard_unary(method, behaviour, gate=gate, observer=watcher),
                request_deserializer=deserializer,
                response_serializer=serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                guard_stream(method, handler), deserializer, serializer
            )
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                guard_stream(method, handler), deserializer, serializer
            )
        raise TypeError(f"{method}: stream-unary methods are not served here")

    registrar = _Registrar(server, guard, hot)
    add_to_server(servicer, registrar)
    if registrar.unmatched:  # generated code that registers generic handlers only
        raise RuntimeError(f"cannot guard the methods of {sorted(registrar.unmatched)}")
