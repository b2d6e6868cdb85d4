"""What the container files must mirror, derived from the local stack's code (its distributed profile)."""

from __future__ import annotations

import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from airflow_mlops import settings as package_settings
from airflow_mlops.serving.config import ENV_ADMIN_TOKEN, ENV_TOKEN
from airflow_mlops.serving.server import ENV_TRACKING_URI
from airflow_mlops.stack.components import AIRFLOW_COMPONENTS, S3_SERVER, component_argv, component_env, stack_env
from airflow_mlops.stack.keys import Secrets
from airflow_mlops.stack.settings import DEFAULTS, MANAGED_S3_KEYS, StackConfig

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"

PROCESS_PREFIXES = ("AIRFLOW", "MLOPS_", "MLFLOW_", "AWS_")
"""Variables that configure a process of the stack (the rest of the environment is the machine's)."""
NATIVE_ONLY = {"MLOPS_STACK_DIR": "the local stack's marker of the processes it started"}
SERVICE_READS = {"mlflow": set(), "model-server": {ENV_TOKEN, ENV_ADMIN_TOKEN, ENV_TRACKING_URI}}
"""What the non-Airflow services read of the stack's environment (the local stack hands them all of it)."""
SECRETS = Secrets(**{f.name: f"<secret {f.name}>" for f in fields(Secrets)})


def cfg() -> StackConfig:
    """The distributed profile with the repository's mlops.env and nothing from this machine's environment."""
    return StackConfig.load(environ={}, overrides={"MLOPS_STACK_PROFILE": "distributed"})


def stack_inputs() -> set[str]:
    """Settings that configure the local stack itself (mlops.env) rather than a process it starts."""
    return set(DEFAULTS) - {s.env for s in package_settings.SETTINGS}


def is_secret(value: str) -> bool:
    return "<secret " in value or any(key in value for key in MANAGED_S3_KEYS.values())


def is_portable(value: str, conf: StackConfig) -> bool:
    """Whether a native value should be the same in a container: no address, path of this machine or secret."""
    local = ("127.0.0.", str(conf.state_dir), str(conf.repo_root))
    return not is_secret(value) and not any(part in value for part in local) and not value.startswith("{")


def native_env(conf: StackConfig, component: str) -> dict[str, str]:
    """The environment one component of the distributed profile gets, as far as it configures the process."""
    base = stack_env(conf, SECRETS)
    env = component_env(conf, component, base)
    if component in SERVICE_READS:
        keep = SERVICE_READS[component] | {k for k, v in env.items() if base.get(k) != v}
        env = {k: v for k, v in env.items() if k in keep}
    skip = stack_inputs() | set(NATIVE_ONLY)
    return {k: v for k, v in env.items() if k.startswith(PROCESS_PREFIXES) and k not in skip}


def service_of(conf: StackConfig, component: str) -> str:
    """The compose service that runs a native component (a worker's log server runs in the worker's container)."""
    if component == S3_SERVER:
        return "minio"
    if component in AIRFLOW_COMPONENTS:
        return f"airflow-{component}"
    worker = next((w for w in conf.workers if component in (w.name, w.log_server)), None)
    return f"airflow-{worker.name}" if worker is not None else component


def native_argv(conf: StackConfig, component: str) -> list[str]:
    """A component's command line, its program reduced to a name (airflow, python, mlflow)."""
    argv = component_argv(conf, component)
    program = Path(argv[0]).name
    return ["python" if program.startswith("python") else program, *argv[1:]]


def connection(value: str) -> dict[str, Any]:
    """An AIRFLOW_CONN_* value (JSON form)."""
    parsed: dict[str, Any] = json.loads(value)
    return parsed


# Compose files ------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


def load_yaml(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def variables(text: str) -> list[tuple[str, str, str]]:
    """(name, operator, argument) of each ${...} interpolation in a compose file."""
    return [(m["name"], m["op"] or "", m["arg"] or "") for m in _VAR.finditer(text.replace("$$", ""))]


def resolve(value: object) -> str:
    """A compose value with every variable at its default; a required one becomes `<required NAME>`."""

    def one(m: re.Match[str]) -> str:
        if m["op"] in (":-", "-"):
            return str(m["arg"])
        return f"<required {m['name']}>"

    return _VAR.sub(one, str(value).replace("$$", "\0")).replace("\0", "$")


def command(service: dict[str, Any]) -> list[str]:
    """A service's command line with defaults resolved; the Airflow image's entrypoint runs bare
    subcommands as `airflow <subcommand>` (services that replace the entrypoint run theirs as given)."""
    cmd = service.get("command", [])
    argv = [resolve(x) for x in (cmd if isinstance(cmd, list) else cmd.split())]
    if "entrypoint" not in service and argv and argv[0] not in ("bash", "python", "airflow"):
        argv = ["airflow", *argv]
    return argv


def options(argv: list[str]) -> dict[str, str | None]:
    """--option -> its value (None for a flag) of a command line."""
    out: dict[str, str | None] = {}
    for i, token in enumerate(argv):
        if token.startswith("--"):
            nxt = argv[i + 1] if i + 1 < len(argv) else None
            out[token] = nxt if nxt is not None and not nxt.startswith("--") else None
    return out


def head(argv: list[str]) -> list[str]:
    """Program and subcommand: the tokens before the first --option."""
    return next((argv[:i] for i, t in enumerate(argv) if t.startswith("--")), argv)


HOST_REF = r'(?://|@|"host": "){name}(?=[:/"])'
"""How a value names another service as a host: in a URL, or as a connection's host."""


def referenced_hosts(text: str, names: list[str]) -> set[str]:
    return {n for n in names if re.search(HOST_REF.format(name=re.escape(n)), text)}


# The package and its lock ----------------------------------------------------------------------------------


def pyproject() -> dict[str, Any]:
    import tomllib

    data: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def package_version() -> str:
    return str(pyproject()["project"]["version"])


def python_version() -> str:
    """The one minor Python version the package supports (requires-python >=3.X,<3.X+1)."""
    spec = pyproject()["project"]["requires-python"]
    match = re.fullmatch(r">=(\d+\.\d+),<(\d+\.\d+)", spec.replace(" ", ""))
    assert match, f"requires-python {spec!r} names more than one minor version"
    return match.group(1)


def locked(name: str) -> str:
    """The version requirements.lock pins a package to."""
    text = (REPO / "requirements.lock").read_text()
    match = re.search(rf"^{re.escape(name)}==(\S+)$", text, re.MULTILINE)
    assert match, f"{name} is not in requirements.lock"
    return match.group(1)


def airflow_image() -> str:
    """The official Airflow image of the lock's Airflow and the package's Python."""
    return f"apache/airflow:{locked('apache-airflow')}-python{python_version()}"
