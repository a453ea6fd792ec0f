"""The container topology, checked without Docker.

Docker cannot run on the development machines, so docker-compose.yaml, the Dockerfile and
.dockerignore are read as data and held to what `docker compose up` needs: every mounted or
built path exists, the connections parse the way Airflow parses them, and the services have a
start order that the healthchecks can actually satisfy.

logs/ is the one mounted host path allowed to be missing: it is gitignored, Docker creates a
missing bind-mount source on first start, and airflow-init hands it to AIRFLOW_UID.
"""

from __future__ import annotations

import fnmatch
import graphlib
import re
import shlex
import tomllib
from itertools import pairwise
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yaml"
DOCKERFILE = REPO / "Dockerfile"

AIRFLOW_IMAGE = "apache/airflow"
AIRFLOW_VERSION = "3.3.2"
LOCAL_IMAGE = "bedrock-batch-airflow:local"
OFFICIAL_SERVICES = {
    "postgres",
    "redis",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}
AIRFLOW_COMPONENTS = OFFICIAL_SERVICES - {"postgres", "redis", "airflow-init"}
EXPECTED_CONN_TYPES = {"aws_default": "aws", "warehouse_default": "postgres"}
EXPECTED_VARIABLES = {
    "bedrock_batch_role_arn": "arn:aws:iam::123456789012:role/BedrockBatchInference",
    "bedrock_batch_input_bucket": "bedrock-batch-demo",
    "bedrock_batch_output_bucket": "bedrock-batch-demo",
}
# Host variables the compose file may read; each must carry a default so that a bare
# `docker compose up` works without an .env file.
HOST_VARIABLES = {"AIRFLOW_UID", "AIRFLOW_JWT_SECRET", "LOCAL_AWS_SPEED"}
# Mount sources Docker creates at runtime instead of the repository holding them.
RUNTIME_CREATED = {"logs"}
LONG_RUNNING_RESTARTS = {"always", "unless-stopped"}

_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<default>:?-[^}]*)?\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


class _UniqueKeyLoader(yaml.SafeLoader):
    """Compose rejects a repeated key in one mapping; PyYAML would silently keep the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [key.value for key, _ in node.value if isinstance(key, yaml.ScalarNode) and key.value != "<<"]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(None, None, f"repeated keys {repeated}", node.start_mark)
        return super().construct_mapping(node, deep=deep)


def interpolate(value: str) -> str:
    """Resolve compose interpolation the way an empty host environment would."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("default") is None:
            raise AssertionError(f"{match.group(0)!r} in {value!r} has no default")
        return match.group("default").lstrip(":")[1:]

    return _INTERPOLATION.sub(replace, value)


def iter_strings(node: object):
    """Every string in a loaded YAML document, keys included."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from iter_strings(key)
            yield from iter_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_strings(item)


def environment_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {name: interpolate(str(value)) for name, value in env.items()}


def depends_on_of(service: dict) -> dict[str, str]:
    """depends_on as {service: condition}; the short list form means service_started."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def bind_mounts_of(service: dict) -> list[tuple[str, str]]:
    """(host source, container target) of every bind mount; named volumes are skipped."""
    mounts = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((interpolate(volume["source"]), volume["target"]))
            continue
        source, target = interpolate(volume).split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def command_words(service: dict, key: str) -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [interpolate(str(word)) for word in value]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def copy_pairs() -> list[tuple[list[str], str]]:
    """(sources, destination) of every COPY from the build context."""
    pairs = []
    for keyword, args in dockerfile_instructions():
        if keyword != "COPY":
            continue
        words = shlex.split(args)
        if any(word.startswith("--from") for word in words):
            continue  # copies from another stage or image, not from the build context
        paths = [word for word in words if not word.startswith("--")]
        pairs.append((paths[:-1], paths[-1]))
    return pairs


def base_image() -> tuple[str, str]:
    froms = [args.split()[0] for keyword, args in dockerfile_instructions() if keyword == "FROM"]
    assert len(froms) == 1, f"expected one FROM in {DOCKERFILE.name}, found {froms}"
    image, _, tag = froms[0].partition(":")
    return image, tag


@pytest.fixture(scope="module")
def compose_spec() -> dict:
    return yaml.load(COMPOSE_FILE.read_text(), Loader=_UniqueKeyLoader)


@pytest.fixture(scope="module")
def compose_services(compose_spec: dict) -> dict[str, dict]:
    return compose_spec["services"]


@pytest.fixture
def airflow_env_backend(compose_services: dict[str, dict], monkeypatch: pytest.MonkeyPatch):
    """Airflow's own environment-variable secrets backend, fed the scheduler's environment."""
    from airflow.secrets.environment_variables import EnvironmentVariablesBackend

    for name, value in environment_of(compose_services["airflow-scheduler"]).items():
        if name.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_")):
            monkeypatch.setenv(name, value)
    return EnvironmentVariablesBackend()


# --- services ---------------------------------------------------------------------------------


def test_official_airflow_3_services_are_all_present(compose_services):
    assert compose_services.keys() >= OFFICIAL_SERVICES


def test_executor_is_celery_with_redis_broker(compose_services):
    env = environment_of(compose_services["airflow-scheduler"])
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert urlsplit(env["AIRFLOW__CELERY__BROKER_URL"]).hostname == "redis"


def test_airflow_components_share_one_jwt_secret(compose_services):
    secrets = {
        name: environment_of(compose_services[name]).get("AIRFLOW__API_AUTH__JWT_SECRET")
        for name in AIRFLOW_COMPONENTS
    }
    assert None not in secrets.values(), secrets
    assert len(set(secrets.values())) == 1


def test_airflow_services_run_the_locally_built_image(compose_services):
    airflow_services = OFFICIAL_SERVICES - {"postgres", "redis"} | {"local-aws"}
    images = {name: compose_services[name].get("image") for name in airflow_services}
    assert set(images.values()) == {LOCAL_IMAGE}, images
    assert all("build" in compose_services[name] for name in airflow_services)


def test_postgres_runs_version_16(compose_services):
    assert compose_services["postgres"]["image"] == "postgres:16"


def test_local_aws_runs_the_stand_in_on_port_4566(compose_services):
    service = compose_services["local-aws"]
    words = command_words(service, "entrypoint") + command_words(service, "command")
    assert words[:3] == ["python", "-m", "local_aws"]
    options = dict(zip(words[3::2], words[4::2], strict=True))
    assert options["--host"] == "0.0.0.0"
    assert options["--port"] == "4566"
    assert options["--state-dir"] == "/state"
    assert "4566:4566" in service["ports"]


def test_local_aws_state_dir_is_a_named_volume(compose_spec):
    volumes = compose_spec["services"]["local-aws"]["volumes"]
    sources = {volume.split(":")[0] for volume in volumes if volume.split(":")[1] == "/state"}
    assert sources, "nothing is mounted at /state"
    assert sources <= (compose_spec.get("volumes") or {}).keys()


def test_local_aws_healthcheck_polls_its_health_endpoint_with_python(compose_services):
    test = compose_services["local-aws"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "urllib.request" in test[3]
    assert "http://localhost:4566/_local/health" in test[3]
    compile(test[3], "<healthcheck>", "exec")


# --- mounts and build contexts ----------------------------------------------------------------


def test_every_bind_mounted_host_path_exists(compose_services):
    missing = {
        (name, source)
        for name, service in compose_services.items()
        for source, _ in bind_mounts_of(service)
        if not (REPO / source).exists() and PurePosixPath(source).name not in RUNTIME_CREATED
    }
    assert not missing


def test_runtime_created_mount_sources_are_gitignored():
    ignored = {line.strip().strip("/") for line in (REPO / ".gitignore").read_text().splitlines()}
    assert ignored >= RUNTIME_CREATED


def test_every_build_context_holds_a_dockerfile(compose_services):
    contexts = {
        name: service["build"] if isinstance(service["build"], str) else service["build"]["context"]
        for name, service in compose_services.items()
        if "build" in service
    }
    assert contexts
    assert all((REPO / context / "Dockerfile").is_file() for context in contexts.values()), contexts


@pytest.mark.parametrize("folder", ["dags", "plugins", "include", "config", "logs"])
def test_airflow_components_mount_project_folder_into_airflow_home(compose_services, folder):
    expected = (f"./{folder}", f"/opt/airflow/{folder}")
    without = [name for name in AIRFLOW_COMPONENTS if expected not in bind_mounts_of(compose_services[name])]
    assert not without


def test_include_is_mounted_beside_plugins_where_the_library_looks_for_it(compose_services):
    # bedrock_batch.config finds include/ two levels above its own file: plugins/../include.
    targets = dict(bind_mounts_of(compose_services["airflow-worker"]))
    assert PurePosixPath(targets["./include"]).parent == PurePosixPath(targets["./plugins"]).parent


def test_postgres_init_scripts_create_the_warehouse_database(compose_services):
    mounts = {target: source for source, target in bind_mounts_of(compose_services["postgres"])}
    init_dir = REPO / mounts["/docker-entrypoint-initdb.d"]
    sql = " ".join(path.read_text() for path in sorted(init_dir.glob("*.sql")))
    assert re.search(r"\bCREATE\s+DATABASE\s+warehouse\b", sql, re.IGNORECASE)


# --- connections and variables ----------------------------------------------------------------


def test_compose_defines_exactly_the_expected_connections(compose_services):
    env = environment_of(compose_services["airflow-scheduler"])
    prefix = "AIRFLOW_CONN_"
    conn_ids = {name.removeprefix(prefix).lower() for name in env if name.startswith(prefix)}
    assert conn_ids == EXPECTED_CONN_TYPES.keys()


@pytest.mark.parametrize(("conn_id", "conn_type"), sorted(EXPECTED_CONN_TYPES.items()))
def test_connection_parses_as_airflow_connection_of_expected_type(airflow_env_backend, conn_id, conn_type):
    conn = airflow_env_backend.get_connection(conn_id)
    assert conn is not None
    assert conn.conn_type == conn_type


def test_aws_connection_endpoint_points_at_the_local_aws_service(airflow_env_backend, compose_services):
    extra = airflow_env_backend.get_connection("aws_default").extra_dejson
    endpoint = urlsplit(extra["endpoint_url"])
    assert endpoint.hostname == "local-aws"
    assert endpoint.hostname in compose_services
    words = command_words(compose_services["local-aws"], "command")
    assert str(endpoint.port) == words[words.index("--port") + 1]
    assert extra["region_name"] == "us-east-1"


def test_warehouse_connection_targets_the_warehouse_database_on_postgres(
    airflow_env_backend, compose_services
):
    conn = airflow_env_backend.get_connection("warehouse_default")
    assert conn.host == "postgres"
    assert conn.host in compose_services
    assert conn.schema == "warehouse"


@pytest.mark.parametrize(("key", "value"), sorted(EXPECTED_VARIABLES.items()))
def test_pipeline_variable_is_set_from_the_environment(airflow_env_backend, key, value):
    assert airflow_env_backend.get_variable(key) == value


def test_every_airflow_service_sees_the_same_connections_and_variables(compose_services):
    def settings(name: str) -> dict[str, str]:
        env = environment_of(compose_services[name])
        return {key: value for key, value in env.items() if key.startswith(("AIRFLOW_CONN_", "AIRFLOW_VAR_"))}

    reference = settings("airflow-scheduler")
    assert reference
    assert all(settings(name) == reference for name in AIRFLOW_COMPONENTS | {"airflow-init"})


def test_compose_reads_only_documented_host_variables_with_defaults(compose_spec):
    read = set()
    for text in iter_strings(compose_spec):
        for match in _INTERPOLATION.finditer(text):
            name = match.group("braced") or match.group("bare")
            if name:
                read.add(name)
                assert match.group("default"), f"{match.group(0)!r} has no default (write $$ for a literal $)"
    assert read <= HOST_VARIABLES


# --- start order ------------------------------------------------------------------------------


def test_every_dependency_names_an_existing_service(compose_services):
    unknown = {
        (name, dep)
        for name, service in compose_services.items()
        for dep in depends_on_of(service)
        if dep not in compose_services
    }
    assert not unknown


def test_dependencies_have_a_topological_start_order(compose_services):
    graph = {name: set(depends_on_of(service)) for name, service in compose_services.items()}
    order = list(graphlib.TopologicalSorter(graph).static_order())
    assert order.index("postgres") < order.index("airflow-init") < order.index("airflow-scheduler")


def test_every_service_healthy_dependency_has_a_healthcheck(compose_services):
    unchecked = {
        dep
        for service in compose_services.values()
        for dep, condition in depends_on_of(service).items()
        if condition == "service_healthy" and "healthcheck" not in compose_services[dep]
    }
    assert not unchecked


def test_every_service_completed_successfully_dependency_is_a_one_shot(compose_services):
    deps = {
        dep
        for service in compose_services.values()
        for dep, condition in depends_on_of(service).items()
        if condition == "service_completed_successfully"
    }
    assert deps == {"airflow-init"}
    long_running = {dep for dep in deps if compose_services[dep].get("restart") in LONG_RUNNING_RESTARTS}
    assert not long_running


def test_every_long_running_service_has_a_healthcheck(compose_services):
    unchecked = {
        name
        for name, service in compose_services.items()
        if service.get("restart") in LONG_RUNNING_RESTARTS and "healthcheck" not in service
    }
    assert not unchecked


def test_airflow_components_wait_for_airflow_init_and_healthy_backends(compose_services):
    for name in AIRFLOW_COMPONENTS:
        deps = depends_on_of(compose_services[name])
        assert deps.get("airflow-init") == "service_completed_successfully", name
        assert deps.get("postgres") == deps.get("redis") == "service_healthy", name


def test_task_running_components_wait_for_a_healthy_local_aws(compose_services):
    for name in ("airflow-worker", "airflow-triggerer"):
        assert depends_on_of(compose_services[name]).get("local-aws") == "service_healthy", name


def test_init_creates_the_jobs_pool_counting_deferred_tasks_and_seeds_the_demo(compose_services):
    from scripts.local_env import JOBS_POOL, JOBS_POOL_SLOTS

    init = compose_services["airflow-init"]
    script = "\n".join(init["command"])
    assert f"airflow pools set {JOBS_POOL} {JOBS_POOL_SLOTS} " in script
    pool_line = script.split(f"pools set {JOBS_POOL}", 1)[1].splitlines()[0]
    assert pool_line.rstrip().endswith("--include-deferred")
    assert "python -m include.compose_init" in script
    assert (REPO / "include" / "compose_init.py").is_file()
    assert depends_on_of(init).get("local-aws") == "service_healthy"


def test_the_pipeline_uses_the_pool_the_init_creates():
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline
    from scripts.local_env import JOBS_POOL

    assert load_pipeline(PIPELINES_DIR / "summarize_calls.yaml").jobs.pool == JOBS_POOL


# --- image ------------------------------------------------------------------------------------


def test_dockerfile_builds_from_airflow_3_3_2():
    image, tag = base_image()
    assert image == AIRFLOW_IMAGE
    assert tag.split("-")[0] == AIRFLOW_VERSION


def test_dockerfile_python_matches_pyproject():
    _, tag = base_image()
    python = tag.partition("-python")[2]
    requires = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python
    assert python in SpecifierSet(requires)


def test_requirements_pin_the_image_airflow_version():
    pins = re.findall(r"^apache-airflow==(\S+)", (REPO / "requirements.txt").read_text(), re.MULTILINE)
    assert pins == [base_image()[1].split("-")[0]]


def test_dockerfile_installs_requirements_txt_without_pip_cache():
    destinations = {dest for sources, dest in copy_pairs() if "requirements.txt" in sources}
    installs = [
        args for keyword, args in dockerfile_instructions() if keyword == "RUN" and "pip install" in args
    ]
    assert destinations
    flags = {("-r", dest) for dest in destinations}
    reads_requirements = [args for args in installs if flags & set(pairwise(shlex.split(args)))]
    assert reads_requirements, installs
    assert all("--no-cache-dir" in args for args in reads_requirements)


def test_dockerfile_installs_requirements_as_the_airflow_user():
    user, install_users = None, []
    for keyword, args in dockerfile_instructions():
        if keyword == "USER":
            user = args
        elif keyword == "RUN" and "pip install" in args:
            install_users.append(user)
    assert install_users and set(install_users) == {"airflow"}


def test_dockerfile_copies_local_aws_where_the_service_runs_it(compose_services):
    working_dir = compose_services["local-aws"]["working_dir"]
    assert (["local_aws/"], f"{working_dir}/local_aws/") in copy_pairs()


def test_dockerignore_keeps_every_copied_source():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def ignored(path: str) -> bool:
        parts = PurePosixPath(path).parts
        prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            glob = pattern.lstrip("!").strip("/")
            if any(fnmatch.fnmatch(prefix, glob) for prefix in prefixes):
                verdict = not negate
        return verdict

    sources = [source.rstrip("/") for sources, _ in copy_pairs() for source in sources]
    assert sources
    assert not [source for source in sources if ignored(source)]
