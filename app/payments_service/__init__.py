"""payments-service: an idempotent gRPC payment microservice."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("payments-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
