"""docker/compose.yaml against the local stack's distributed profile: parsed, not run (no Docker engine here).

Everything expected is derived from the stack's code, so a change to the native profile that the compose
file does not mirror fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from airflow_mlops.stack.components import components
from airflow_mlops.stack.settings import DEFAULTS, StackConfig
from tests.docker import native

COMPOSE = native.DOCKER / "compose.yaml"
INFRASTRUCTURE = {"postgres", "redis", "airflow-init"}
"""Services the local stack does not start (it uses the machine's PostgreSQL and Redis, and prepares them itself)."""
COMMAND_EXCEPTIONS = {
    # The API server reads the local stack's task and trigger logs from its own disk; containers share no
    # disk, so workers and the triggerer serve their logs themselves (as the local stack's log servers do).
    "worker": {"--skip-serve-logs"},
    "triggerer": {"--skip-serve-logs"},
}
EXTRA_OPTIONS = {
    # MLflow 3 refuses Host headers other than localhost and private addresses: the service's name.
    "mlflow": {"--allowed-hosts"},
}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return native.load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "environment as a mapping, so that anchors merge"
    return {k: native.resolve(v) for k, v in env.items() if k.startswith(native.PROCESS_PREFIXES)}


def _kind(component: str) -> str:
    return "worker" if component.startswith("worker-") else component


def _mirrored(conf: StackConfig) -> list[tuple[str, str]]:
    """(component, service) pairs whose environment and command line mirror the native ones: not a worker's
    log server (the worker's container serves its logs), not the S3 server (MinIO takes its own settings)."""
    pairs = [(c, native.service_of(conf, c)) for c in components(conf)]
    return [(c, s) for c, s in pairs if not c.endswith("-logs") and s != "minio"]


def test_the_services_are_the_components_of_the_distributed_profile(services: dict[str, Any]) -> None:
    conf = native.cfg()
    expected = {native.service_of(conf, c) for c in components(conf)} | INFRASTRUCTURE
    assert set(services) == expected
    assert len([c for c in components(conf) if c.startswith("worker-") and not c.endswith("-logs")]) == 2


def test_each_service_gets_the_environment_names_of_its_component(services: dict[str, Any]) -> None:
    conf = native.cfg()
    for component, service in _mirrored(conf):
        expected = native.native_env(conf, component)
        got = _env(services[service])
        assert set(got) == set(expected), (
            f"{service}: missing {set(expected) - set(got)}, extra {set(got) - set(expected)}"
        )


def test_values_that_do_not_depend_on_the_host_are_the_same(services: dict[str, Any]) -> None:
    conf = native.cfg()
    for component, service in _mirrored(conf):
        got = _env(services[service])
        for key, value in native.native_env(conf, component).items():
            if native.is_portable(value, conf):
                assert got[key] == value, f"{service}: {key}"


def test_secrets_are_required_variables_never_literals(services: dict[str, Any]) -> None:
    conf = native.cfg()
    for component in ("api-server", "worker-1", "mlflow", "model-server"):
        got = _env(services[native.service_of(conf, component)])
        for key, value in native.native_env(conf, component).items():
            if native.is_secret(value):
                assert "<required " in got[key], f"{component}: {key} must come from docker/.env"


def test_connections_have_the_native_fields(services: dict[str, Any]) -> None:
    conf = native.cfg()
    expected = native.native_env(conf, "worker-1")
    got = _env(services["airflow-worker-1"])
    conns = [k for k in expected if k.startswith("AIRFLOW_CONN_")]
    assert len(conns) == 3
    for key in conns:
        mine, theirs = native.connection(got[key]), native.connection(expected[key])
        assert mine["conn_type"] == theirs["conn_type"]
        assert set(mine) == set(theirs), key
        assert set(mine.get("extra", {})) == set(theirs.get("extra", {})), key
        for field in ("port", "schema"):
            assert mine.get(field) == theirs.get(field), f"{key}: {field}"
        assert mine.get("extra", {}).get("lake_root") == theirs.get("extra", {}).get("lake_root")


def test_the_airflow_init_service_prepares_what_up_prepares(services: dict[str, Any]) -> None:
    init = services["airflow-init"]
    script = " ".join(native.command(init))
    assert "python -m airflow_mlops.stack backends --distributed" in script
    assert script.index("backends") < script.index("airflow db migrate")
    assert "restart" not in init
    extra = set(_env(init)) - set(native.native_env(native.cfg(), "scheduler"))
    assert extra <= set(DEFAULTS), f"airflow-init: {extra - set(DEFAULTS)} are no settings of the stack"


def test_command_lines_match_the_native_ones(services: dict[str, Any]) -> None:
    conf = native.cfg()
    for component, service in _mirrored(conf):
        theirs, mine = native.native_argv(conf, component), native.command(services[service])
        assert native.head(mine) == native.head(theirs), service
        want = set(native.options(theirs)) - COMMAND_EXCEPTIONS.get(_kind(component), set())
        have = set(native.options(mine)) - EXTRA_OPTIONS.get(component, set())
        assert have == want, f"{service}: missing {want - have}, extra {have - want}"
        for option, value in native.options(theirs).items():
            if option in have and value is not None and native.is_portable(value, conf):
                assert native.options(mine)[option] == value, f"{service}: {option}"


def test_settings_names_are_the_native_ones(services: dict[str, Any]) -> None:
    """Every variable compose reads is a setting of the stack (with its default) or one of its secrets."""
    conf = native.cfg()
    credentials = {"MLOPS_S3_ACCESS_KEY_ID", "MLOPS_S3_SECRET_ACCESS_KEY", "MLOPS_POSTGRES_PASSWORD"}
    # ^ settings the local stack may leave empty (trust authentication, its own S3 server's keys)
    secret_names = credentials | {
        k for c, _ in _mirrored(conf) for k, v in native.native_env(conf, c).items() if native.is_secret(v)
    }  # fmt: skip
    assert secret_names >= {"AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "MLOPS_MODEL_SERVER_TOKEN"}
    for name, op, arg in native.variables(COMPOSE.read_text()):
        assert name in DEFAULTS or name in secret_names, f"${{{name}}} is no setting of the stack"
        if name in secret_names:
            assert op == ":?", f"${{{name}}} is a secret: required (docker/.env), no default"
        elif op == ":-":
            assert arg == DEFAULTS[name], f"${{{name}}} defaults to {arg!r}, the stack to {DEFAULTS[name]!r}"


def _one_shot(services: dict[str, Any]) -> set[str]:
    return {
        target
        for s in services.values()
        for target, dep in s.get("depends_on", {}).items()
        if dep.get("condition") == "service_completed_successfully"
    }


def test_every_long_running_service_has_a_health_check(services: dict[str, Any]) -> None:
    one_shot = _one_shot(services)
    assert one_shot == {"airflow-init"}
    for name, service in services.items():
        if name in one_shot:
            continue
        check = service.get("healthcheck", {})
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert service.get("restart") == "unless-stopped", name


def test_dependencies_wait_for_health_or_completion(services: dict[str, Any]) -> None:
    one_shot = _one_shot(services)
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on with conditions"
        for target, dep in deps.items():
            want = "service_completed_successfully" if target in one_shot else "service_healthy"
            assert dep.get("condition") == want, f"{name} -> {target}"


def test_a_service_waits_for_every_service_it_names_as_a_host(services: dict[str, Any]) -> None:
    names = list(services)

    def reaches(src: str, dst: str, seen: frozenset[str] = frozenset()) -> bool:
        deps = set(services[src].get("depends_on", {}))
        return dst in deps or any(reaches(d, dst, seen | {src}) for d in deps - seen)

    for name, service in services.items():
        text = " ".join([*_env(service).values(), *native.command(service)])
        for host in native.referenced_hosts(text, names) - {name}:
            # A service may name one that waits for it (airflow-init gets the Airflow env but never calls them).
            assert reaches(name, host) or reaches(host, name), f"{name} uses {host} without waiting for it"


def test_images_are_pinned_and_the_package_image_is_built_here(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: pin {image}"
        if "build" in service:
            assert image == f"airflow-mlops:{native.package_version()}", name
            assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
            assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).is_file()
    built = {n for n, s in services.items() if "build" in s}
    assert built == {n for n in services if n not in ("postgres", "redis", "minio")}


def test_published_ports_are_the_native_port_settings_on_loopback(services: dict[str, Any]) -> None:
    published = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = native.resolve(port).split(":")
            assert host_ip == "127.0.0.1", f"{name}: publish on loopback, as the local stack listens"
            published[name] = (host_port, container_port)
    conf = native.cfg()
    assert published == {
        "airflow-api-server": (str(conf.airflow_port), "8080"),
        "mlflow": (str(conf.mlflow_port), "5000"),
        "model-server": (str(conf.model_server_port), "8000"),
        "minio": (str(conf.s3_port), "9000"),
    }
