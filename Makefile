# payments-service developer commands. `make` (or `make help`) lists them.
# Every target that runs Python creates and uses the project's own .venv first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest

.DEFAULT_GOAL := help
.PHONY: help install shell proto proto-check env-example run traces test test-unit \
        test-integration test-e2e coverage lint format typecheck bench clean

help: ## List the targets
	@if [ -t 1 ]; then on='\033[36m' off='\033[0m'; else on='' off=''; fi; \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} \
		/^[a-zA-Z0-9_-]+:.*## / {printf "  %s%-18s%s %s\n", on, $$1, off, $$2}' $(MAKEFILE_LIST)

# The locked versions, checked against their hashes (requirements/dev.txt: the service's
# dependencies at requirements/runtime.txt's versions and every development tool), then the
# service itself from the working tree, editable and without resolving again (pip builds it
# with the setuptools pyproject.toml asks for, as the image's build does from build.txt).
$(STAMP): pyproject.toml requirements/dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes --requirement requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps --editable .
	@touch $@

install: $(STAMP) ## Create .venv and install the service with its development tools (locked versions)

shell: $(STAMP) ## Open a shell with .venv/bin first on PATH (python, payments-service, grpcurl, pytest); exit leaves it
	@echo "make shell: $(CURDIR)/$(BIN) is first on PATH; exit (or Ctrl+D) leaves this shell"
	@PATH="$(CURDIR)/$(BIN):$$PATH" VIRTUAL_ENV="$(CURDIR)/$(VENV)" $${SHELL:-/bin/sh}

proto: $(STAMP) ## Regenerate the Python code (and type stubs) from proto/payments.proto
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc \
		-Ipayments_service=proto \
		--python_out=app --grpc_python_out=app --mypy_out=app --mypy_grpc_out=app \
		payments_service/payments.proto

proto-check: $(STAMP) ## Fail if the committed generated code differs from what the proto produces
	$(PYTEST) tests/e2e/test_generated_code.py

env-example: $(STAMP) ## Write .env.example (every setting with its default) from the Settings class
	$(BIN)/python -c 'from payments_service.config import settings_env_file as f; print(f(), end="")' \
		> .env.example

run: $(STAMP) ## Serve on port 7000 of every interface (HOST=[::]), in-memory store; Ctrl+C stops it
	$(BIN)/python -m payments_service

traces: $(STAMP) ## Like make run, and each call's span is printed on stdout (no collector needed)
	OTEL_TRACES_EXPORTER=console $(BIN)/python -m payments_service

test: $(STAMP) ## Run every test (unit, integration, end-to-end)
	$(PYTEST) tests

test-unit: $(STAMP) ## Run the unit tests (no I/O)
	$(PYTEST) tests/unit

test-integration: $(STAMP) ## Run the store contract and integration tests (real server, real DB)
	$(PYTEST) tests/contract tests/integration

test-e2e: $(STAMP) ## Run the end-to-end tests (real grpcurl, Prometheus, Helm engine, ...)
	$(PYTEST) tests/e2e

# Server and CLI processes the tests start are measured too (pyproject.toml: patch).
TESTS ?= tests
HTMLCOV ?= htmlcov
coverage: $(STAMP) ## Run the tests with branch coverage; report in htmlcov/index.html (TESTS=tests/unit: one layer)
	$(PYTEST) --cov --cov-report=term --cov-report=html:$(HTMLCOV) $(TESTS)

.PHONY: image-test
image-test: $(STAMP) ## Build the image with podman and test it running: container, kube play, compose
	$(PYTEST) tests/e2e/test_image.py

lint: $(STAMP) ## Lint the code (ruff), check formatting, audit the locked dependencies
	$(BIN)/ruff check app tests bench k8s
	$(BIN)/ruff format --check app tests bench k8s
	@$(MAKE) --no-print-directory audit

# pip-audit asks PyPI's JSON API (pypi.org/pypi/<name>/<version>/json) for advisories.
# Where that API cannot answer for the locked versions (no route to pypi.org, or versions
# only a private mirror has) the audit is reported as SKIPPED; AUDIT_REQUIRED=1 makes that
# a failure. Accepted advisories go in AUDIT_IGNORE (--ignore-vuln ID), each explained in
# SECURITY.md.
AUDIT_LOCKS := requirements/runtime.txt requirements/build.txt
AUDIT_IGNORE :=
AUDIT_REQUIRED ?=
AUDIT_PROBE := import re, urllib.request as u; \
	name, version = re.search(r"^([A-Za-z0-9_.-]+)==([^ ]+)", open("requirements/runtime.txt").read(), re.M).groups(); \
	u.urlopen(f"https://pypi.org/pypi/{name}/{version}/json", timeout=10)

.PHONY: audit soak
audit: $(STAMP) ## Check the locked dependencies for known vulnerabilities (pip-audit)
	@if $(BIN)/python -c '$(AUDIT_PROBE)' 2>/dev/null; then \
		$(BIN)/pip-audit --strict --disable-pip --progress-spinner off $(AUDIT_IGNORE) \
			$(addprefix --requirement ,$(AUDIT_LOCKS)); \
	else \
		echo "pip-audit: SKIPPED, PyPI's JSON API has no data for the locked versions here"; \
		test -z "$(AUDIT_REQUIRED)"; \
	fi

format: $(STAMP) ## Format the code and apply safe lint fixes
	$(BIN)/ruff format app tests bench k8s
	$(BIN)/ruff check --fix app tests bench k8s

typecheck: $(STAMP) ## Type-check the package, the tests and the benchmarks with mypy --strict
	$(BIN)/mypy

bench: $(STAMP) ## Measure calls/s and latency against a bare grpcio server (prints figures)
	$(BIN)/python -m bench

SOAK_MINUTES ?= 10
soak: $(STAMP) ## Run at ~70% of measured capacity for SOAK_MINUTES (10); prints rate, p99, RSS
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES)

# --- delivery: lock files, container image, plain manifests, kind ---------------------------
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE ?= payments-service:$(VERSION)
CONTAINER ?= payment-service
CLUSTER ?= payments
STORAGE ?= memory
PIP_COMPILE := $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --allow-unsafe \
	--no-emit-index-url --no-emit-find-links
.PHONY: lock docker-build docker-run docker-run-bg docker-stop manifests kind-up kind-smoke kind-down

# dev.txt: the service's dependencies and the development tools (with build.in's setuptools
# and wheel, which grpcio-tools and pip-tools need too). pip-compile keeps the versions a
# lock file already pins, so the service's dependencies stay at runtime.txt's versions;
# tests/e2e/test_tooling.py fails when they differ (but packaging, which checkov holds <24).
lock: $(STAMP) ## Re-resolve requirements/*.txt (pinned, with hashes) from pyproject.toml
	$(PIP_COMPILE) --output-file requirements/runtime.txt pyproject.toml
	$(PIP_COMPILE) --output-file requirements/build.txt requirements/build.in
	$(PIP_COMPILE) --extra dev --output-file requirements/dev.txt pyproject.toml requirements/build.in

docker-build: ## Build the container image payments-service:<version> and :latest (needs Docker)
	docker build --tag $(IMAGE) --tag payments-service:latest .

docker-run: ## Run the image in the foreground, ports 7000 and 9464 published on every interface (Ctrl+C stops it)
	docker run --rm --name $(CONTAINER) --read-only --tmpfs /tmp --cap-drop ALL \
		-p 7000:7000 -p 9464:9464 $(IMAGE)

docker-run-bg: ## Run the image in the background (container payment-service)
	docker run --detach --rm --name $(CONTAINER) --read-only --tmpfs /tmp --cap-drop ALL \
		-p 7000:7000 -p 9464:9464 $(IMAGE)

docker-stop: ## Stop the background container (SIGTERM, graceful)
	docker stop $(CONTAINER)

manifests: $(STAMP) ## Render k8s/payments-service.yaml from the chart's default values
	$(BIN)/python k8s/render_manifests.py > k8s/payments-service.yaml.tmp
	mv k8s/payments-service.yaml.tmp k8s/payments-service.yaml

kind-up: ## kind cluster + image + Jaeger/Prometheus + helm install (STORAGE=postgres: on PostgreSQL)
	CLUSTER=$(CLUSTER) IMAGE=$(IMAGE) STORAGE=$(STORAGE) k8s/kind/up.sh

kind-smoke: ## grpcurl calls via port-forward; check Prometheus series and a Jaeger trace
	CLUSTER=$(CLUSTER) k8s/kind/smoke.sh

kind-down: ## Delete the kind cluster
	CLUSTER=$(CLUSTER) k8s/kind/down.sh

clean: ## Remove the virtual environment, caches and build output
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .coverage .coverage.* htmlcov \
		build dist app/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
