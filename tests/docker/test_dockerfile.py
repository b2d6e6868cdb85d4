"""docker/Dockerfile, parsed: the official Airflow image of the lock's version, the wheel with its extras,
constrained by requirements.lock, and the files the package reads at run time."""

from __future__ import annotations

import re
import shlex

import pytest

from airflow_mlops import settings as package_settings
from tests.docker import native

DOCKERFILE = native.DOCKER / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    lines = [ln for ln in DOCKERFILE.read_text().splitlines() if not ln.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def _copies() -> list[tuple[set[str], list[str]]]:
    """(flags, paths) of each COPY: its sources, then its destination."""
    out = []
    for word, args in instructions():
        if word == "COPY":
            tokens = shlex.split(args)
            out.append(({t for t in tokens if t.startswith("--")}, [t for t in tokens if not t.startswith("--")]))
    return out


def test_every_stage_is_the_official_image_of_the_locked_airflow() -> None:
    froms = [args.split()[0] for word, args in instructions() if word == "FROM"]
    assert froms and all(image == native.airflow_image() for image in froms)
    assert native.airflow_image() == f"apache/airflow:{native.locked('apache-airflow')}-python3.11"


def test_the_wheel_is_installed_with_the_extras_constrained_by_the_lock() -> None:
    runs = [args for word, args in instructions() if word == "RUN" and "pip install" in args]
    assert len(runs) == 1
    install = shlex.split(runs[0].split("&&")[0])
    lock_dest = next(paths[-1] for _, paths in _copies() if paths[0] == "requirements.lock")
    assert install[install.index("--constraint") + 1] == lock_dest
    wheel = next(t for t in install if ".whl" in t)
    extras = set(re.search(r"\[([^\]]+)\]$", wheel).group(1).split(","))  # type: ignore[union-attr]
    assert extras == set(native.pyproject()["project"]["optional-dependencies"]) - {"dev"}
    built = [args for word, args in instructions() if word == "RUN" and "pip wheel" in args]
    assert len(built) == 1 and "--no-deps" in built[0]


@pytest.mark.parametrize("folder", ["dags", "include"])
def test_the_runtime_files_are_copied_into_airflow_home(folder: str) -> None:
    assert [f"{folder}/", f"/opt/airflow/{folder}/"] in [paths for _, paths in _copies()]


def test_the_settings_it_sets_are_package_settings_pointing_at_copied_folders() -> None:
    envs = [args for word, args in instructions() if word == "ENV"]
    pairs = dict(token.split("=", 1) for args in envs for token in shlex.split(args))
    assert set(pairs) == {package_settings.PIPELINES_DIR.env, package_settings.EXPECTATIONS_DIR.env}
    for value in pairs.values():
        relative = value.removeprefix("/opt/airflow/")
        assert (native.REPO / relative).is_dir(), value


def test_the_build_context_admits_exactly_what_is_copied() -> None:
    patterns = [
        ln.strip() for ln in (native.DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]  # fmt: skip
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    assert patterns[0] == "*", "everything is excluded first (.venv and .local are gigabytes)"
    sources = {src.rstrip("/") for flags, paths in _copies() if not any(f.startswith("--from") for f in flags)
               for src in paths[:-1]}  # fmt: skip
    assert sources <= admitted, f"copied but not in the build context: {sources - admitted}"
    assert all((native.REPO / s).exists() for s in admitted)
