"""The provider as Airflow sees it: ProvidersManager, the connection forms of the UI, the Test button, [mlops]."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_mlops import __version__
from airflow_mlops.provider import CONNECTION_TYPES, get_provider_info
from tests.fixtures.mlflow_server import free_port

CONN_TYPES = {"mlops_lake": "LakeHook", "mlops_mlflow": "MlflowHook", "mlops_model_server": "ModelServerHook"}


def test_provider_info_passes_airflows_schema() -> None:
    import jsonschema
    from airflow.providers_manager import _read_schema_from_resources_or_local_file

    schema = _read_schema_from_resources_or_local_file("provider_info.schema.json")
    info = get_provider_info()
    jsonschema.validate(info, schema)
    option_schema = schema["definitions"]["option"]
    for option in info["config"]["mlops"]["options"].values():
        jsonschema.validate(option, option_schema)
        assert set(option_schema["required"]) <= set(option)


def test_providers_manager_finds_the_installed_package() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.providers["airflow-mlops"].version == __version__
    for conn_type, class_name in CONN_TYPES.items():
        hook = manager.hooks[conn_type]
        assert hook is not None, conn_type
        assert hook.hook_class_name == f"airflow_mlops.hooks.{class_name}"
        assert hook.connection_testable, conn_type  # Airflow offers the Test button
        # the class's own attributes (what Airflow reads once the hook is imported) agree with the provider info
        declared = next(c for c in CONNECTION_TYPES if c["connection-type"] == conn_type)
        assert (hook.connection_type, hook.hook_name) == (conn_type, declared["hook-name"])


def test_airflow_lists_the_mlops_config_section() -> None:
    from airflow.configuration import conf
    from airflow.providers_manager import ProvidersManager

    ProvidersManager().initialize_providers_configuration()
    assert conf.get("mlops", "storage_conn_id") == "mlops_storage"
    assert conf.get("mlops", "reports_base_url") == "/mlops"
    description = conf.configuration_description["mlops"]["options"]["pipelines_dir"]["description"]
    assert "MLOPS_PIPELINES_DIR wins" in description


def hook_meta(api: Any) -> dict[str, dict[str, Any]]:
    client, tokens = api
    resp = client.get("/ui/connections/hook_meta", headers={"Authorization": f"Bearer {tokens['admin']}"})
    assert resp.status_code == 200, resp.text
    return {meta["connection_type"]: meta for meta in resp.json()}


def test_connection_forms_as_the_ui_gets_them(airflow_api: Any) -> None:
    forms = hook_meta(airflow_api)
    lake = forms["mlops_lake"]
    assert lake["hook_name"] == "MLOps lake (local folder or S3)"
    assert lake["hook_class_name"] == "airflow_mlops.hooks.LakeHook"
    fields = lake["standard_fields"]
    assert fields["host"]["hidden"] and fields["port"]["hidden"] and fields["url_schema"]["hidden"]
    assert fields["login"]["title"] == "AWS access key ID"
    extra = lake["extra_fields"]
    assert list(extra) == ["lake_root", "endpoint_url", "region_name", "aws_session_token"]
    assert extra["lake_root"]["schema"]["title"] == "Lake root"
    assert extra["aws_session_token"]["schema"]["format"] == "password"  # masked in the form

    mlflow = forms["mlops_mlflow"]
    assert mlflow["standard_fields"]["url_schema"]["title"] == "Scheme (http or https)"
    assert set(mlflow["extra_fields"]) == {"tracking_uri", "registry_uri", "ui_url", "token", "insecure_tls"}
    assert mlflow["extra_fields"]["insecure_tls"]["schema"]["type"] == ["boolean", "null"]

    server = forms["mlops_model_server"]
    assert server["standard_fields"]["login"]["hidden"]
    assert server["standard_fields"]["password"]["title"] == "API token"


def press_test(api: Any, monkeypatch: pytest.MonkeyPatch, conn_type: str, **fields: Any) -> tuple[int, Any]:
    """What the form's Test button sends: POST /api/v2/connections/test with the unsaved form."""
    client, tokens = api
    monkeypatch.setenv("AIRFLOW__CORE__TEST_CONNECTION", "Enabled")
    if "extra" in fields:
        fields["extra"] = json.dumps(fields["extra"])
    body = {"connection_id": f"form_{conn_type}", "conn_type": conn_type, **fields}
    resp = client.post("/api/v2/connections/test", json=body, headers={"Authorization": f"Bearer {tokens['admin']}"})
    return resp.status_code, resp.json()


def test_test_button_is_off_unless_enabled(airflow_api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    client, tokens = airflow_api
    monkeypatch.delenv("AIRFLOW__CORE__TEST_CONNECTION", raising=False)
    resp = client.post(
        "/api/v2/connections/test",
        json={"connection_id": "x", "conn_type": "mlops_lake", "extra": json.dumps({"lake_root": str(tmp_path)})},
        headers={"Authorization": f"Bearer {tokens['admin']}"},
    )
    assert resp.status_code == 403 and "disabled" in resp.json()["detail"]


def test_test_button_lake_on_s3(
    airflow_api: Any, monkeypatch: pytest.MonkeyPatch, s3_lake_root: tuple[str, dict[str, Any]]
) -> None:
    root, kwargs = s3_lake_root
    s3 = {"endpoint_url": kwargs["endpoint_url"], "region_name": kwargs["region_name"]}
    keys = {"login": kwargs["aws_access_key_id"], "password": kwargs["aws_secret_access_key"]}
    status, answer = press_test(airflow_api, monkeypatch, "mlops_lake", **keys, extra={"lake_root": root, **s3})
    assert status == 200 and answer["status"] is True, answer
    assert root in answer["message"]

    missing = root.replace("s3://", "s3://no-such-bucket-")
    bucket = missing.removeprefix("s3://").split("/")[0]
    status, answer = press_test(airflow_api, monkeypatch, "mlops_lake", **keys, extra={"lake_root": missing, **s3})
    assert status == 200 and answer["status"] is False
    assert f"bucket '{bucket}' does not exist" in answer["message"]


def test_test_button_local_lake(airflow_api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    status, answer = press_test(airflow_api, monkeypatch, "mlops_lake", extra={"lake_root": str(tmp_path)})
    assert status == 200 and answer["status"] is True, answer
    (tmp_path / "file").write_text("not a folder")
    status, answer = press_test(airflow_api, monkeypatch, "mlops_lake", extra={"lake_root": str(tmp_path / "file")})
    assert answer["status"] is False and str(tmp_path / "file") in answer["message"]


def test_test_button_mlflow(airflow_api: Any, monkeypatch: pytest.MonkeyPatch, mlflow_server: str) -> None:
    port = int(mlflow_server.rsplit(":", 1)[1])
    status, answer = press_test(airflow_api, monkeypatch, "mlops_mlflow", host="127.0.0.1", port=port, schema="http")
    assert status == 200 and answer["status"] is True
    assert answer["message"] == f"MLflow at {mlflow_server} is up and the API answers"

    down = free_port()
    status, answer = press_test(airflow_api, monkeypatch, "mlops_mlflow", host="127.0.0.1", port=down)
    assert answer["status"] is False and f"cannot reach MLflow at http://127.0.0.1:{down}" in answer["message"]


def test_test_button_model_server(
    airflow_api: Any,
    monkeypatch: pytest.MonkeyPatch,
    mlflow_server: str,
    model_server_factory: Any,
    lake_root: Path,
    tmp_path: Path,
) -> None:
    from tests.fixtures.model_server import TOKEN

    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()  # no pipeline: the server is up and serves nothing, which is enough for the button
    server = model_server_factory(mlflow_server, lake_root, pipelines)
    where = {"host": "127.0.0.1", "port": server.port}
    status, answer = press_test(airflow_api, monkeypatch, "mlops_model_server", **where, password=TOKEN)
    assert status == 200 and answer["status"] is True, answer
    assert answer["message"] == f"the model server at {server.url} is up; serving: nothing"

    status, answer = press_test(airflow_api, monkeypatch, "mlops_model_server", **where, password="wrong-token")
    assert answer["status"] is False
    assert answer["message"] == f"the model server at {server.url} refused the credentials (HTTP 403)"

    server.stop()
    status, answer = press_test(airflow_api, monkeypatch, "mlops_model_server", **where, password=TOKEN)
    assert answer["status"] is False and f"cannot reach the model server at {server.url}" in answer["message"]
