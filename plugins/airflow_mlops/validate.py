"""`python -m airflow_mlops validate`: every check of pipeline files that needs no data, lake or server."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfig, PipelineConfigError, Problem, load_pipeline, suite_path
from airflow_mlops.config.problems import fmt_loc
from airflow_mlops.config.suites import SuiteReadError, read_suite, suite_problems
from airflow_mlops.config.yamlfile import YamlError, load_yaml


@dataclass
class Report:
    """The files checked and every problem found in them."""

    files: list[Path] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def pipeline_files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """The `.yaml` files named or found in the folders named; a `.yml` file or a missing path is a problem."""
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.yaml"))
            problems += [Problem(str(p), None, "(file)", "use the .yaml extension") for p in sorted(path.glob("*.yml"))]
        elif path.is_file() and path.suffix == ".yaml":
            files.append(path)
        elif path.is_file():
            problems.append(Problem(str(path), None, "(file)", "a pipeline file ends in .yaml"))
        else:
            problems.append(Problem(str(path), None, "(file)", "no such file or folder"))
    return files, problems


def check_file(path: Path, gx: bool = True) -> list[Problem]:
    """The problems of one pipeline file: its schema and expressions (as loading it does), then its suites."""
    try:
        cfg = load_pipeline(path)
    except PipelineConfigError as exc:
        return exc.problems or [Problem(str(path), None, "(file)", str(exc))]
    return suite_file_problems(path, cfg, gx)


def suite_file_problems(path: Path, cfg: PipelineConfig, gx: bool = True) -> list[Problem]:
    """Each source's suite: readable, accepted by Great Expectations, and naming declared columns of
    compatible types."""
    try:
        doc = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, YamlError):  # it loaded a moment ago
        doc = None
    problems: list[Problem] = []

    def add(loc: tuple[str | int, ...], message: str) -> None:
        problems.append(Problem(str(path), doc.line_of(loc) if doc else None, fmt_loc(loc), message))

    for name, source in cfg.sources.items():
        suite_key = ("sources", name, "suite")
        suite = suite_path(source.suite)
        try:
            entries = read_suite(suite)
        except SuiteReadError as exc:
            add(suite_key, str(exc))
            continue
        for column, message in suite_problems(entries, source.columns, name):
            add(("sources", name, "columns", column) if column else suite_key, f"suite {source.suite}: {message}")
        if gx:
            from airflow_mlops.core.ingest.validation import SuiteError, check_suite

            try:
                check_suite(suite)
            except SuiteError as exc:
                add(suite_key, f"Great Expectations refuses the suite: {exc}")
    return problems


def validate(paths: Iterable[Path] | None = None, gx: bool = True) -> Report:
    """Check the named files and folders (default: the configured pipelines folder)."""
    files, problems = pipeline_files(list(paths or [settings.pipelines_dir()]))
    report = Report(files, problems)
    for path in files:
        report.problems += check_file(path, gx)
    return report
