"""docker/helm/values-*.yaml (the official Airflow chart's values), parsed against the local stack's
distributed profile: executor, the package image, and every setting and connection name of the native
environment, either set here or set by the chart itself. Not installed: no cluster here."""

from __future__ import annotations

from typing import Any

import pytest

from tests.docker import native

HELM = native.DOCKER / "helm"
VALUES = {"CeleryExecutor": HELM / "values-celery.yaml", "KubernetesExecutor": HELM / "values-kubernetes.yaml"}

CHART_MANAGED: dict[str, str | None] = {
    # native name -> the values key that must provide it (None: the chart derives it from its own defaults)
    "AIRFLOW_HOME": None,
    "AIRFLOW__CORE__DAGS_FOLDER": None,  # the image's /opt/airflow/dags
    "AIRFLOW__CORE__EXECUTOR": "executor",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "data.metadataSecretName",
    "AIRFLOW__CELERY__RESULT_BACKEND": "data.metadataSecretName",
    "AIRFLOW__CELERY__BROKER_URL": "redis.enabled",
    "AIRFLOW__CORE__FERNET_KEY": "fernetKeySecretName",
    "AIRFLOW__API__SECRET_KEY": "apiSecretKeySecretName",
    "AIRFLOW__API_AUTH__JWT_SECRET": "jwtSecretName",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": None,  # the chart's api-server Service
    "AIRFLOW__API__HOST": None,
    "AIRFLOW__API__PORT": None,
    "AIRFLOW__API__BASE_URL": None,  # the team's ingress
    "AIRFLOW__LOGGING__BASE_LOG_FOLDER": None,
    "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": None,
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": None,  # the chart's ports.workerLogs
    # The team's auth manager: the local stack's SimpleAuthManager keeps its password in one pod's file.
    "AIRFLOW__CORE__AUTH_MANAGER": None,
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": None,
    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": None,
    # Pods have host names of their own; the chart's worker Service resolves them for the log fetch.
    "AIRFLOW__CORE__HOSTNAME_CALLABLE": None,
    "MLOPS_WORKER_HOSTNAME": None,
}


def _get(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _celery_only(name: str) -> bool:
    return "__CELERY" in name or name == "AIRFLOW__OPERATORS__DEFAULT_QUEUE"


def _native_names(executor: str) -> dict[str, str]:
    conf = native.cfg()
    env = {**native.native_env(conf, "scheduler"), **native.native_env(conf, "worker-1")}
    if executor == "KubernetesExecutor":
        env = {k: v for k, v in env.items() if not _celery_only(k)}
    return env


def _provided(values: dict[str, Any]) -> dict[str, str]:
    """Every variable the values set: config sections as AIRFLOW__SECTION__KEY, env and secret entries."""
    out = {
        f"AIRFLOW__{section.upper()}__{key.upper()}": str(value)
        for section, options in values.get("config", {}).items()
        for key, value in options.items()
    }
    out.update({e["name"]: str(e["value"]) for e in values.get("env", [])})
    out.update({s["envName"]: f"<secret {s['secretName']}/{s['secretKey']}>" for s in values.get("secret", [])})
    return out


@pytest.mark.parametrize("executor", list(VALUES))
def test_executor_and_the_package_image(executor: str) -> None:
    values = native.load_yaml(VALUES[executor])
    assert values["executor"] == executor
    assert values["defaultAirflowRepository"].endswith("/airflow-mlops")
    assert values["defaultAirflowTag"] == native.package_version()
    assert values["airflowVersion"] == native.locked("apache-airflow")
    for image in ("airflow", "pod_template"):
        assert not _get(values, f"images.{image}.repository"), "one image: the package's (defaultAirflow*)"
    assert values["postgresql"]["enabled"] is False and values["data"]["metadataSecretName"]
    assert values["redis"]["enabled"] is (executor == "CeleryExecutor")


@pytest.mark.parametrize("executor", list(VALUES))
def test_every_native_setting_is_set_or_left_to_the_chart(executor: str) -> None:
    values = native.load_yaml(VALUES[executor])
    provided = _provided(values)
    conf = native.cfg()
    for name, value in _native_names(executor).items():
        if name in CHART_MANAGED:
            assert name not in provided, f"{name} is the chart's: setting it here would fight it"
            where = CHART_MANAGED[name]
            if where is not None and not (_celery_only(name) and executor != "CeleryExecutor"):
                assert _get(values, where), f"{name} needs {where}"
            continue
        assert name in provided, f"{executor}: {name} is neither set nor left to the chart"
        if native.is_secret(value) or name.startswith("AIRFLOW_CONN_"):
            assert provided[name].startswith("<secret "), f"{name}: from a Secret, not a literal"
        elif native.is_portable(value, conf):
            assert provided[name] == value, name
    extra = set(provided) - set(_native_names(executor))
    assert not extra, f"not in the native profile: {extra}"


def test_celery_workers_and_slots_are_the_native_ones() -> None:
    values = native.load_yaml(VALUES["CeleryExecutor"])
    conf = native.cfg()
    assert values["workers"]["replicas"] == len(conf.workers)
    assert str(values["config"]["celery"]["worker_concurrency"]) == conf.settings["MLOPS_CELERY_WORKER_CONCURRENCY"]


def test_kubernetes_values_carry_no_celery_setting() -> None:
    provided = _provided(native.load_yaml(VALUES["KubernetesExecutor"]))
    assert not [name for name in provided if _celery_only(name)]
