"""docker-compose.yml and the Dockerfile, checked without a Docker engine (none runs here): the file parses,
everything it references exists, every Airflow setting is a real one, and it configures Airflow the way the
scheduler tests' deployment does (`touchpoint.airflow_server.AirflowDeployment`)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from tests.conftest import PROJECT_ROOT
from touchpoint.airflow_server import COMPONENTS, AirflowDeployment
from touchpoint.config import Paths
from touchpoint.orchestration import WAREHOUSE_POOL

COMPOSE = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
AIRFLOW_SERVICES = {name: service for name, service in SERVICES.items() if name.startswith("airflow-")}
MOUNT = "/opt/touchpoint"
# Settings without which the components cannot work together; both deployments must set each of them.
SHARED_SETTINGS = (
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "TOUCHPOINT_HOME",
)


def _env(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in service["environment"].items()}


def _command(service: dict) -> list[str]:
    command = service["command"]
    return command if isinstance(command, list) else command.split()


@pytest.fixture(scope="module")
def test_deployment_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    paths = Paths(tmp_path_factory.mktemp("deployment_home"))
    return AirflowDeployment(
        paths,
        port=8080,
        executor="CeleryExecutor",
        sql_alchemy_conn="postgresql+psycopg2://airflow:airflow@postgres:5432/airflow",
        celery_broker_url="redis://redis:6379/0",
    ).env()


def test_every_airflow_component_runs_as_a_service() -> None:
    commands = {_command(service)[0] for service in AIRFLOW_SERVICES.values()}
    assert set(COMPONENTS) <= commands
    assert "celery" in commands and SERVICES["airflow-worker"]["profiles"] == ["celery"]
    assert SERVICES["redis"]["profiles"] == ["celery"]


def test_services_build_the_image_from_files_that_exist() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    for name, service in AIRFLOW_SERVICES.items():
        assert service["build"] == ".", name
        assert service["volumes"] == [f"./:{MOUNT}"], name
    base = re.search(r"^FROM apache/airflow:(\S+)-python(\S+)$", dockerfile, re.MULTILINE)
    assert base, "the image must build on the official Airflow image"
    pinned = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"apache-airflow=={base.group(1)}" in pinned
    assert base.group(2) == "3.11"
    assert "-c constraints.txt" in dockerfile and (PROJECT_ROOT / "constraints.txt").exists()
    for copied in re.findall(r"^COPY (?:--\S+ )*(\S+) ", dockerfile, re.MULTILINE):
        assert (PROJECT_ROOT / copied).exists(), copied


def test_paths_inside_the_containers_point_into_the_mounted_project() -> None:
    env = _env(SERVICES["airflow-scheduler"])
    dags = Path(env["AIRFLOW__CORE__DAGS_FOLDER"]).relative_to(MOUNT)
    assert (PROJECT_ROOT / dags / "customer_360.py").exists()
    assert Path(env["TOUCHPOINT_HOME"]).is_relative_to(MOUNT)
    assert Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).is_relative_to(env["TOUCHPOINT_HOME"])


def test_the_execution_api_url_names_the_api_server_and_its_port() -> None:
    env = _env(SERVICES["airflow-scheduler"])
    url = urlparse(env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    api = SERVICES["airflow-apiserver"]
    command = _command(api)
    port = int(command[command.index("--port") + 1])
    assert url.hostname == "airflow-apiserver" and url.port == port and url.path == "/execution/"
    assert any(mapping.endswith(f":{port}") for mapping in api["ports"])


def test_metadata_broker_and_result_backend_name_compose_services() -> None:
    env = _env(SERVICES["airflow-scheduler"])
    metadata = urlparse(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
    postgres = SERVICES["postgres"]["environment"]
    assert metadata.scheme.startswith("postgresql") and metadata.hostname == "postgres"
    assert (metadata.username, metadata.password, metadata.path.strip("/")) == (
        postgres["POSTGRES_USER"],
        postgres["POSTGRES_PASSWORD"],
        postgres["POSTGRES_DB"],
    )
    assert urlparse(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"
    assert urlparse(env["AIRFLOW__CELERY__RESULT_BACKEND"].removeprefix("db+")).hostname == "postgres"


def test_every_airflow_setting_is_a_real_option() -> None:
    from airflow.configuration import conf

    described = conf.configuration_description
    for key in _env(SERVICES["airflow-scheduler"]):
        if not key.startswith("AIRFLOW__"):
            continue
        section, option = key.removeprefix("AIRFLOW__").lower().split("__", 1)
        assert option in described.get(section, {}).get("options", {}), key


def test_compose_sets_what_the_tested_deployment_sets(test_deployment_env: dict[str, str]) -> None:
    compose_env = _env(SERVICES["airflow-scheduler"])
    for key in SHARED_SETTINGS:
        assert key in compose_env, key
        assert key in test_deployment_env, key
    for key in ("AIRFLOW__CORE__LOAD_EXAMPLES", "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"):
        assert compose_env[key] == test_deployment_env[key], key
    # the same result-backend rule: Celery's SQLAlchemy backend on the metadata database
    assert test_deployment_env["AIRFLOW__CELERY__RESULT_BACKEND"] == compose_env["AIRFLOW__CELERY__RESULT_BACKEND"]
    assert compose_env["AIRFLOW__CORE__EXECUTOR"] == "${AIRFLOW_EXECUTOR:-LocalExecutor}"


def test_every_service_shares_one_environment() -> None:
    environments = {name: _env(service) for name, service in AIRFLOW_SERVICES.items()}
    first = next(iter(environments.values()))
    assert all(env == first for env in environments.values())


def test_init_creates_the_writer_pool_the_dag_uses() -> None:
    init = " ".join(_command(SERVICES["airflow-init"]))
    name, slots, _ = WAREHOUSE_POOL
    assert "airflow db migrate" in init
    assert f"airflow pools set {name} {slots} " in init
    dag = (PROJECT_ROOT / "dags" / "customer_360.py").read_text()
    assert f'WAREHOUSE_POOL = "{name}"' in dag


def test_make_airflow_serves_the_embedded_default() -> None:
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^airflow: \$\(STAMP\)\n\t\$\(BIN\)/touchpoint airflow", makefile, re.MULTILINE)
