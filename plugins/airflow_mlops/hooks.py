"""Airflow hooks, one per external system: the lake (local folder or S3) and the MLflow tracking server."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from airflow_mlops import settings

if TYPE_CHECKING:
    import httpx
    from airflow.sdk import Connection
    from mlflow import MlflowClient

    from airflow_mlops.core.lake.storage import Lake
    from airflow_mlops.core.registry.auth import ServerCredentials
    from airflow_mlops.core.registry.tracking import RetryPolicy, Tracking


TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off", ""})


def parse_bool(value: Any, where: str) -> bool:
    """A boolean from a connection extra, strictly: the string "false" is False (bool("false") is True)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"{where}: expected true or false, got {value!r}")


class LakeConfigError(ValueError):
    """The lake cannot be located from the connection and the environment; the message says how to fix it."""


class LakeHook(BaseHook):
    """The deployment's lake, configured by an Airflow connection (AWS conventions).

    Connection fields: login = AWS access key id, password = AWS secret access key (both optional:
    without them boto3's default credential chain applies). Extra (all optional):
    `lake_root` (local folder or s3://bucket/prefix; default: the lake_root setting, see settings.py),
    `endpoint_url` (S3-compatible store such as MinIO), `region_name`, `aws_session_token`,
    `verify` (false or a CA bundle path) and `config_kwargs` (botocore Config options, e.g.
    {"s3": {"addressing_style": "path"}}). Any connection type is accepted.

    :param lake_conn_id: Airflow connection id; default: settings.storage_conn_id(). When that
        deployment default connection is not defined, the lake comes from the lake_root setting alone;
        any other connection id must exist.
    """

    conn_name_attr = "lake_conn_id"
    default_conn_name = settings.DEFAULT_STORAGE_CONN_ID
    conn_type = "mlops_lake"
    hook_name = "MLOps lake (local folder or S3)"

    def __init__(self, lake_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lake_conn_id = lake_conn_id or settings.storage_conn_id()
        self._lake: Lake | None = None

    def _missing(self, exc: AirflowNotFoundException) -> None:
        # The deployment's default connection is optional: a local lake needs only the lake_root setting.
        # Any other connection id was asked for on purpose, so its absence is an error.
        if self.lake_conn_id != settings.storage_conn_id():
            raise exc
        self.log.info("No Airflow connection %r: lake from the lake_root setting alone", self.lake_conn_id)

    def _connection(self) -> Connection | None:
        try:
            return self.get_connection(self.lake_conn_id)
        except AirflowNotFoundException as exc:
            self._missing(exc)
            return None

    async def _aconnection(self) -> Connection | None:
        try:
            return await self.aget_connection(self.lake_conn_id)
        except AirflowNotFoundException as exc:
            self._missing(exc)
            return None

    def lake_root(self) -> str:
        """Root of the lake: the connection's extra `lake_root`, else the lake_root setting."""
        conn = self._connection()
        return self._root(conn.extra_dejson if conn is not None else {})

    def _root(self, extra: dict[str, Any]) -> str:
        root = extra.get("lake_root") or settings.lake_root()
        if not root:
            raise LakeConfigError(
                f'no lake root: set extra {{"lake_root": ...}} on the Airflow connection {self.lake_conn_id!r}, '
                f"or {settings.LAKE_ROOT.hint} (a local folder or s3://bucket/prefix)"
            )
        return str(root)

    @staticmethod
    def s3_client_kwargs(conn: Connection | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """boto3 S3 client arguments from a connection (AWS provider conventions).

        :param extra: the connection's extra, if already decoded (default: conn.extra_dejson).
        """
        if conn is None:
            return {}
        extra = conn.extra_dejson if extra is None else extra
        kwargs: dict[str, Any] = {}
        key_id = conn.login or extra.get("aws_access_key_id")
        secret = conn.password or extra.get("aws_secret_access_key")
        if key_id:
            kwargs["aws_access_key_id"] = key_id
        if secret:
            kwargs["aws_secret_access_key"] = secret
        for name in ("aws_session_token", "endpoint_url", "region_name", "verify"):
            if extra.get(name) not in (None, ""):
                kwargs[name] = extra[name]
        if extra.get("config_kwargs"):
            from botocore.config import Config

            kwargs["config"] = Config(**extra["config_kwargs"])
        return kwargs

    def _build(self, conn: Connection | None, extra: dict[str, Any]) -> Lake:
        from airflow_mlops.core.lake.storage import open_lake

        root = self._root(extra)
        lake = open_lake(root, self.s3_client_kwargs(conn, extra) if root.startswith("s3://") else None)
        self.log.info("Lake of connection %r: %s", self.lake_conn_id, lake.root)
        return lake

    def get_lake(self) -> Lake:
        """The lake, built on first use and then reused by this hook."""
        if self._lake is None:
            conn = self._connection()
            self._lake = self._build(conn, conn.extra_dejson if conn is not None else {})
        return self._lake

    async def aget_lake(self) -> Lake:
        """get_lake for async code (triggers): the connection is fetched without blocking the event loop.

        The lake's own methods block (file system, boto3): call them through asyncio.to_thread.
        """
        if self._lake is None:
            conn = await self._aconnection()
            # aextra_dejson masks secrets without a blocking call to the supervisor.
            self._lake = self._build(conn, await conn.aextra_dejson() if conn is not None else {})
        return self._lake

    def get_conn(self) -> Lake:
        """The lake (Airflow's generic name for a hook's client)."""
        return self.get_lake()

    def test_connection(self) -> tuple[bool, str]:
        """Reach the lake root (S3: the bucket and a listing of the prefix) without writing anything."""
        try:
            return True, self.get_lake().check()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"


class MlflowHook(BaseHook):  # type: ignore[misc]
    """An MLflow tracking server from an Airflow connection.

    Connection (type mlops_mlflow; any type with these fields works): host, port and schema (http or https) give
    the URI; login and password are sent as basic auth. Extras: `tracking_uri` (overrides host/port/schema),
    `registry_uri`, `ui_url` (base URL of the UI for links, when browsers reach it at another address), `token`
    (bearer token, instead of login and password), `insecure_tls` (true or false; only a real true turns off TLS
    verification). Credentials go with this server's requests only and are never put in the environment (see
    `configure`).
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = settings.DEFAULT_MLFLOW_CONN_ID
    conn_type = "mlops_mlflow"
    hook_name = "MLflow tracking server (airflow-mlops)"

    def __init__(self, mlflow_conn_id: str | None = None) -> None:
        """`mlflow_conn_id`: the Airflow connection (default: the deployment's MLflow connection)."""
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id or settings.mlflow_conn_id()
        self._conn: Any = None
        self._client: MlflowClient | None = None

    @property
    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self.get_connection(self.mlflow_conn_id)
        return self._conn

    @property
    def extras(self) -> dict[str, Any]:
        return dict(self.connection.extra_dejson or {})

    def get_tracking_uri(self) -> str:
        """http(s)://host:port of the connection, or its `tracking_uri` extra."""
        override = self.extras.get("tracking_uri")
        if override:
            return str(override).rstrip("/")
        conn = self.connection
        if not conn.host:
            raise ValueError(f"connection {self.mlflow_conn_id!r}: no host and no tracking_uri extra")
        host = str(conn.host).rstrip("/")
        if "://" in host:  # a URL typed into the host field
            return f"{host}:{conn.port}" if conn.port and host.count(":") == 1 else host
        scheme = (conn.schema or "http").lower()
        if scheme not in ("http", "https"):
            raise ValueError(f"connection {self.mlflow_conn_id!r}: schema must be http or https, got {conn.schema!r}")
        return f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")

    def get_registry_uri(self) -> str:
        return str(self.extras.get("registry_uri") or self.get_tracking_uri()).rstrip("/")

    def credentials(self) -> ServerCredentials | None:
        """The connection's login/password or `token` extra, None when it has neither."""
        from airflow_mlops.core.registry.auth import ServerCredentials

        conn, token = self.connection, self.extras.get("token")
        if not conn.login and not token:
            return None
        return ServerCredentials(
            username=str(conn.login) if conn.login else None,
            password=str(conn.password or ""),
            token=str(token) if token else None,
        )

    def insecure_tls(self) -> bool:
        """The `insecure_tls` extra, read strictly: a JSON boolean or true/false/yes/no/1/0 (any case)."""
        return parse_bool(self.extras.get("insecure_tls", False), f"connection {self.mlflow_conn_id!r}: insecure_tls")

    def configure(self) -> None:
        """Make this process's MLflow requests to the connection's server carry its credentials and TLS setting.

        Credentials are registered in memory for this server's URLs only (`core.registry.auth`), never put in
        os.environ, so other servers and child processes never see them. `insecure_tls` is MLflow's
        MLFLOW_TRACKING_INSECURE_TLS (MLflow has no per-server TLS switch): set to exactly what the extra
        says when it is given.
        """
        from airflow_mlops.core.registry.auth import register

        creds = self.credentials()
        if creds is not None:
            for uri in {self.get_tracking_uri(), self.get_registry_uri()}:
                register(uri, creds)
        if "insecure_tls" in self.extras:
            os.environ["MLFLOW_TRACKING_INSECURE_TLS"] = str(self.insecure_tls()).lower()

    def get_client(self) -> MlflowClient:
        """An MlflowClient for the connection's server, created on first use."""
        if self._client is None:
            from mlflow import MlflowClient

            self.configure()
            self._client = MlflowClient(tracking_uri=self.get_tracking_uri(), registry_uri=self.get_registry_uri())
        return self._client

    def get_conn(self) -> MlflowClient:
        return self.get_client()

    def get_tracking(self, retry: RetryPolicy | None = None) -> Tracking:
        """The project's MLflow operations (retrying, idempotent) against this server."""
        from airflow_mlops.core.registry.tracking import Tracking

        self.configure()
        return Tracking(self.get_tracking_uri(), self.get_registry_uri(), retry=retry, ui_url=self.extras.get("ui_url"))

    def test_connection(self) -> tuple[bool, str]:
        """GET /health, then an authenticated API call (search one experiment)."""
        try:
            uri = self.get_tracking_uri()
        except Exception as exc:
            return False, str(exc)
        creds = self.credentials()
        header = creds.authorization() if creds is not None else None
        try:
            verify = not self.insecure_tls()
        except ValueError as exc:
            return False, str(exc)
        ok, why, _ = check_service(
            "MLflow",
            uri,
            ("POST", "/api/2.0/mlflow/experiments/search", {"max_results": 1}),
            headers={"Authorization": header} if header else {},
            verify=verify,
        )
        return ok, why or f"MLflow at {uri} is up and the API answers"


def check_service(
    what: str, base: str, request: tuple[str, str, Any], **client: Any
) -> tuple[bool, str, httpx.Response | None]:
    """A Test button: GET <base>/health, then an authenticated request. (ok, why not, the request's answer).

    :param request: method, path and JSON body of the request that needs the credentials.
    :param client: httpx.Client arguments (auth, headers, verify).
    """
    import httpx

    method, path, body = request
    try:
        with httpx.Client(base_url=base, timeout=10.0, **client) as http:
            health = http.get("/health")
            if health.status_code != 200:
                return False, f"{base}/health answered HTTP {health.status_code}: {health.text[:200]}", None
            answer = http.request(method, path, json=body)
    except httpx.HTTPError as exc:
        return False, f"cannot reach {what} at {base}: {exc}", None
    if answer.status_code in (401, 403):
        return False, f"{what} at {base} refused the credentials (HTTP {answer.status_code})", None
    if answer.status_code != 200:
        return False, f"{base}{path} answered HTTP {answer.status_code}: {answer.text[:200]}", None
    return True, "", answer


class ModelServerError(RuntimeError):
    """The model server refused a request; the message has its status and answer."""


class ModelServerHook(BaseHook):  # type: ignore[misc]
    """The model server of an Airflow connection: base URL from host/port/schema, API token in the password,
    the token of /admin/reload in the extra `admin_token`.

    :param model_server_conn_id: Airflow connection id (default: the deployment's model server connection).
    """

    conn_name_attr = "model_server_conn_id"
    default_conn_name = settings.DEFAULT_MODEL_SERVER_CONN_ID
    conn_type = "mlops_model_server"
    hook_name = "Model server (airflow-mlops)"

    def __init__(self, model_server_conn_id: str | None = None) -> None:
        super().__init__()
        self.model_server_conn_id = model_server_conn_id or settings.model_server_conn_id()

    @staticmethod
    def endpoint(conn: Connection, scheme: str = "http") -> tuple[str, dict[str, str]]:
        """Base URL and request headers (bearer token from the password) of an HTTP connection.

        :param scheme: used when neither the host nor the connection's schema names one.
        """
        host = str(conn.host or "127.0.0.1").rstrip("/")
        base = host if "://" in host else f"{conn.schema or scheme}://{host}"
        if conn.port:
            base = f"{base}:{conn.port}"
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
        return base, headers

    def get_endpoint(self) -> tuple[str, dict[str, str]]:
        return self.endpoint(self.get_connection(self.model_server_conn_id))

    async def aget_endpoint(self) -> tuple[str, dict[str, str]]:
        return self.endpoint(await self.aget_connection(self.model_server_conn_id))

    @staticmethod
    def pipeline_entry(payload: dict[str, Any], pipeline: str) -> dict[str, Any]:
        """A pipeline's part of a /version answer (version served, failed_version, error); empty if absent."""
        return dict(payload.get("pipelines", {}).get(pipeline) or {})

    @classmethod
    def served_version(cls, payload: dict[str, Any], pipeline: str) -> str | None:
        """The version a /version answer says the server serves for a pipeline."""
        version = cls.pipeline_entry(payload, pipeline).get("version")
        return None if version is None else str(version)

    def request(self, method: str, path: str, json: Any = None, timeout: float = 30.0, token: str | None = None) -> Any:
        """One request with the API token (or `token`); the JSON answer."""
        import httpx

        base, headers = self.get_endpoint()
        if token is not None:
            headers = {**headers, "Authorization": f"Bearer {token}"}
        resp = httpx.request(method, f"{base}{path}", headers=headers, json=json, timeout=timeout)
        resp.raise_for_status()
        return resp.json()

    def admin_token(self) -> str | None:
        """The connection's extra `admin_token` (the server's token of /admin/reload), None when not set."""
        token = self.get_connection(self.model_server_conn_id).extra_dejson.get("admin_token")
        return str(token) if token else None

    def reload(self) -> dict[str, Any]:
        """Ask the server to check the champion aliases now (it also polls them); returns its /version answer.

        Without an `admin_token` extra only /version is read: the server picks the alias up by its own poll.
        """
        token = self.admin_token()
        if token is None:
            self.log.warning("connection %r has no admin_token extra: not asking the model server to reload, "
                             "it picks the alias up within its poll interval", self.model_server_conn_id)  # fmt: skip
            return dict(self.request("GET", "/version"))
        return dict(self.request("POST", "/admin/reload", timeout=300.0, token=token))

    @contextmanager
    def predictor(self, pipeline: str, timeout: float = 30.0) -> Iterator[Callable[[list[dict[str, Any]]], Any]]:
        """A function sending rows to /predict/<pipeline> on one kept-alive connection: (predictions, version)."""
        import httpx

        base, headers = self.get_endpoint()
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as client:

            def predict(rows: list[dict[str, Any]]) -> tuple[list[Any], str]:
                resp = client.post(f"/predict/{pipeline}", json={"rows": rows})
                if resp.status_code != 200:
                    raise ModelServerError(f"/predict/{pipeline} answered HTTP {resp.status_code}: {resp.text[:500]}")
                body = resp.json()
                return body["predictions"], str(body["model_version"])

            yield predict

    def test_connection(self) -> tuple[bool, str]:
        """GET /health, then GET /version with the token: the server is up and takes the token."""
        try:
            base, headers = self.get_endpoint()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        ok, why, answer = check_service("the model server", base, ("GET", "/version", None), headers=headers)
        if answer is None:
            return ok, why
        pipelines = answer.json().get("pipelines", {})
        served = ", ".join(f"{name} v{entry.get('version') or ' none yet'}" for name, entry in pipelines.items())
        return True, f"the model server at {base} is up; serving: {served or 'nothing'}"
