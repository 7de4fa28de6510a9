"""docker-compose.yml: valid against the compose specification, and consistent with the
service's settings and the Prometheus configuration it ships. (test_image runs its service and
test client with podman-compose.)"""

from __future__ import annotations

import pytest
import yaml

from payments_service.config import Settings
from tests.support.chart import assert_tool_passes
from tests.support.compose import COMPOSE, compose
from tests.support.environment import ROOT

pytestmark = pytest.mark.tools

SERVICE = "payment-service"
#: Variables read by the OpenTelemetry SDK itself rather than by Settings.
SDK_VARIABLES = {"OTEL_RESOURCE_ATTRIBUTES"}


def test_compose_file_matches_the_compose_specification() -> None:
    assert_tool_passes("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(COMPOSE))


def test_every_environment_variable_is_a_setting() -> None:
    environment = compose()["services"][SERVICE]["environment"]
    unknown = {name for name in environment if name.lower() not in Settings.model_fields}
    assert unknown <= SDK_VARIABLES, unknown
    settings = Settings(**{k.lower(): v for k, v in environment.items() if k not in SDK_VARIABLES})
    assert settings.port == Settings.model_fields["port"].default


@pytest.mark.parametrize(
    "env", [{}, {"PORT": "8080", "MAX_WORKERS": "20"}], ids=["default", "dotenv"]
)
def test_published_ports_follow_the_settings(env: dict[str, str]) -> None:
    service = compose(env)["services"][SERVICE]
    environment = service["environment"]
    published = {tuple(map(int, mapping.split(":"))) for mapping in service["ports"]}
    port = int(environment["PORT"])
    assert port == int(env.get("PORT", Settings.model_fields["port"].default))
    assert environment["MAX_WORKERS"] == env.get("MAX_WORKERS", "10")
    assert (port, port) in published
    metrics = int(environment["METRICS_PORT"])
    assert (metrics, metrics) in published


def test_prometheus_scrapes_the_services_metrics_port() -> None:
    stack = compose()
    prometheus = stack["services"]["prometheus"]
    (config_mount,) = [v for v in prometheus["volumes"] if v.endswith("prometheus.yml:ro")]
    config = yaml.safe_load((ROOT / config_mount.split(":")[0]).read_text())
    targets = [
        target
        for job in config["scrape_configs"]
        if job["job_name"] == "payments-service"
        for static in job["static_configs"]
        for target in static["targets"]
    ]
    metrics_port = stack["services"][SERVICE]["environment"]["METRICS_PORT"]
    assert targets == [f"{SERVICE}:{metrics_port}"]
    for volume in prometheus["volumes"]:
        assert (ROOT / volume.split(":")[0]).exists(), volume


def test_traces_go_to_jaegers_otlp_port() -> None:
    stack = compose()
    endpoint = stack["services"][SERVICE]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == "http://jaeger:4317"


def test_test_client_profile_uses_the_cli_against_the_service() -> None:
    client = compose()["services"]["test-client"]
    assert client["profiles"] == ["test"]
    script = client["command"][0]
    assert f"payments-client --target {SERVICE}:7000 health" in script
    assert client["depends_on"][SERVICE]["condition"] == "service_healthy"
