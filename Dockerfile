# payments-service container image.
#   docker build -t payments-service:0.1.0 .      (or: make docker-build)
#   podman build --format docker -t payments-service:0.1.0 .   (--format docker keeps HEALTHCHECK)
# Two stages: "build" installs the locked, hash-checked dependencies and the service into a
# virtual environment with no pip or setuptools of its own (a separate build venv holds the
# tools); the final stage copies only that venv onto a clean slim Python.
# The base is pinned to an exact version tag; pin its digest too (...@sha256:...) once you
# have pulled and verified it from your registry. PYTHON_IMAGE replaces it (both stages) with
# another Debian-based Python 3.11 image that has `python` on PATH, e.g. one built locally.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
# checkov:skip=CKV_DOCKER_7: FROM names the ARG above, whose default is an exact version tag (a test checks it)

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# The build tool (setuptools) and every runtime dependency come from lock files with hashes
# (make lock): pip refuses any file whose hash differs.
COPY requirements/build.txt requirements/runtime.txt requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --no-deps -r requirements/build.txt \
    && python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install \
       --require-hashes --no-deps -r requirements/runtime.txt
COPY pyproject.toml README.md LICENSE ./
COPY app ./app
# The service itself: no dependencies resolved here (all came from the lock above).
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="payments-service" \
      org.opencontainers.image.description="Idempotent gRPC payment microservice" \
      org.opencontainers.image.licenses="MIT"
# No .pyc writes at run time (the root filesystem may be read-only), logs unbuffered.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# A numeric, non-root user with no home and no shell; it owns nothing in the image.
RUN groupadd --system --gid 10001 payments \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin payments
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
WORKDIR /tmp
# gRPC API, Prometheus /metrics, plaintext health-only port (HEALTH_PORT, when set).
EXPOSE 7000 9464 7001
STOPSIGNAL SIGTERM
# The project's own CLI asks the standard health service, on HEALTH_PORT when that is set.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/bin/sh", "-c", "port=${HEALTH_PORT:-0}; [ \"$port\" != 0 ] || port=${PORT:-7000}; exec payments-client --target \"127.0.0.1:$port\" --timeout 3 health"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "payments_service"]
