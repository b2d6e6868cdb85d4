"""Pipeline configs (`include/pipelines/<name>.yaml`): a strict typed schema with errors naming file and key."""

from __future__ import annotations

import re
import string
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from airflow_mlops import settings
from airflow_mlops.config.deploy import DeployConfig
from airflow_mlops.config.monitor import MonitorConfig
from airflow_mlops.config.schema import NAME_PATTERN, Name, Strict
from airflow_mlops.config.train import TrainConfig, train_cross_check

ColumnType = Literal["int64", "float64", "string", "bool", "datetime"]


class PipelineConfigError(ValueError):
    """One or more pipeline configs are invalid; the message names each file, key and problem."""


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
    suite: str = Field(description="Great Expectations suite file in include/expectations/.")

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

    def landing_path(self, ds: str) -> str:
        """Path below landing/<pipeline>/ for one logical date."""
        return self.path.format(ds=ds)


class IngestConfig(Strict):
    """The `<p>__ingest` DAG."""

    schedule: str | None = Field("@daily", description="Cron or preset; one run per logical date.")
    catchup: bool = Field(True, description="Run every missed date from start_date on.")
    max_active_runs: int = Field(4, ge=1, description="Logical dates ingested at once (backfills).")
    sensor: SensorConfig = SensorConfig()  # type: ignore[call-arg]


class JoinConfig(Strict):
    """A left join of another source onto the base rows."""

    source: str = Field(description="Name of the joined source.")
    keys: list[str] = Field(min_length=1, description="Join columns, with the same name on both sides.")
    columns: dict[str, str] = Field(
        min_length=1, description="Columns to take from the source: {source_column: feature_name}."
    )


class LabelConfig(Strict):
    """The training label, computed from base columns."""

    name: str = Field(description="Column name of the label in the feature store.")
    expr: str = Field(description="pandas expression giving the label, e.g. `arr_delay > 15`.")
    known: str | None = Field(
        None, description="Expression true where the label is known; elsewhere the label is null."
    )


class FeaturesConfig(Strict):
    """How features are built from the validated sources."""

    base: str = Field(description="The partitioned source whose rows become feature rows.")
    key: list[str] = Field(
        min_length=1, description="Columns identifying a row within a date (used for joins to outcomes)."
    )
    timestamp: str = Field(description="Event time column of the base source.")
    keep: list[str] = Field(default_factory=list, description="Base columns kept as features or for slicing.")
    joins: list[JoinConfig] = Field(default_factory=list)
    derived: dict[str, str] = Field(
        default_factory=dict, description="{feature: pandas expression over the joined columns}."
    )
    label: LabelConfig


class PipelineConfig(Strict):
    """One ML pipeline: every DAG of it comes from this."""

    name: Name = Field(description="Pipeline name, equal to the file name; DAG ids are `<name>__<kind>`.")
    description: str = Field("", description="One line shown on the DAGs in the Airflow UI.")
    owner: str = Field("mlops", description="Airflow owner of every task.")
    tags: list[str] = Field(
        default_factory=list, description="Extra DAG tags (every DAG is also tagged mlops and the name)."
    )
    start_date: date = Field(description="First logical date of the pipeline's DAGs.")
    end_date: date | None = Field(None, description="Last logical date, if the data ends.")
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

    @model_validator(mode="after")
    def _cross_references(self) -> PipelineConfig:
        src = self.sources
        names = ", ".join(src)
        base = src.get(self.features.base)
        if base is None:
            raise _KeyError(("features", "base"), f"unknown source {self.features.base!r} (sources: {names})")
        if not base.partitioned:
            raise _KeyError(
                ("features", "base"), f"source {self.features.base!r} must be partitioned ({{ds}} in its path)"
            )
        for col in [*self.features.key, self.features.timestamp, *self.features.keep]:
            if col not in base.columns:
                raise _KeyError(
                    ("features",), f"column {col!r} is not a declared column of source {self.features.base!r}"
                )
        for i, join in enumerate(self.features.joins):
            other = src.get(join.source)
            if other is None:
                raise _KeyError(
                    ("features", "joins", i, "source"), f"unknown source {join.source!r} (sources: {names})"
                )
            for col in [*join.keys, *join.columns]:
                if col not in other.columns:
                    raise _KeyError(
                        ("features", "joins", i), f"column {col!r} is not a declared column of source {join.source!r}"
                    )
            for col in join.keys:
                if col not in base.columns:
                    raise _KeyError(
                        ("features", "joins", i, "keys"),
                        f"column {col!r} is not a declared column of source {self.features.base!r}",
                    )
        for loc, msg in train_cross_check(self.train, self.feature_columns, self.features.key):
            raise _KeyError(loc, msg)
        drift = self.monitor.drift
        for field_name, cols in (
            ("columns", drift.columns),
            ("critical", drift.critical),
            ("methods", list(drift.methods)),
            ("thresholds", list(drift.thresholds)),
        ):
            for col in cols:
                if col not in self.feature_columns:
                    raise _KeyError(
                        ("monitor", "drift", field_name),
                        f"column {col!r} is not a feature column ({', '.join(self.feature_columns)})",
                    )
        if self.end_date and self.end_date < self.start_date:
            raise _KeyError(("end_date",), "must not be before start_date")
        return self

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


class _KeyError(ValueError):
    """A cross-field problem located at a key path, so the message can name it."""

    def __init__(self, loc: tuple[str | int, ...], msg: str) -> None:
        super().__init__(msg)
        self.loc = loc
        self.msg = msg


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml parses ~10x faster


class _UniqueKeyLoader(_BaseLoader):  # type: ignore[misc]
    """Safe loader that refuses a key repeated in one mapping (YAML would keep only the last)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        if isinstance(key, bool):
            # YAML 1.1 reads unquoted on/off/yes/no as booleans: say so instead of a puzzling type error.
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key_node.value!r} is read as the boolean {key}; quote it", key_node.start_mark
            )
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    mapping: dict[Any, Any] = loader.construct_mapping(node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _fmt_loc(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_pipeline(text: str, source: str, expected_name: str | None = None) -> PipelineConfig:
    """Parse and check one config; `source` names it in errors."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise PipelineConfigError(f"{source}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise PipelineConfigError(f"{source}: (top level): must be a mapping of keys, got {type(raw).__name__}")
    try:
        cfg = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, _KeyError):
                lines.append(f"{source}: {_fmt_loc(ctx_err.loc)}: {ctx_err.msg}")
            elif err["type"] == "extra_forbidden":
                lines.append(f"{source}: {_fmt_loc(tuple(err['loc']))}: unknown key (not part of the schema)")
            else:
                lines.append(f"{source}: {_fmt_loc(tuple(err['loc']))}: {err['msg']}")
        raise PipelineConfigError("\n".join(lines)) from None
    if expected_name is not None and cfg.name != expected_name:
        raise PipelineConfigError(f"{source}: name: {cfg.name!r} must equal the file name {expected_name!r}")
    return cfg


def load_pipeline(path: Path) -> PipelineConfig:
    """Load `include/pipelines/<name>.yaml`; the suites it names must exist."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineConfigError(f"{path}: cannot read: {exc}") from exc
    cfg = parse_pipeline(text, str(path), expected_name=path.stem)
    exp = settings.expectations_dir()
    if not exp.is_dir():
        raise PipelineConfigError(_missing_folder("expectations", exp, settings.EXPECTATIONS_DIR))
    for name, src in cfg.sources.items():
        if not (exp / src.suite).is_file():
            raise PipelineConfigError(f"{path}: sources.{name}.suite: no suite file {exp / src.suite}")
    return cfg


def _missing_folder(what: str, folder: Path, setting: settings.Setting) -> str:
    holds = {"pipelines": "<name>.yaml pipeline files", "expectations": "Great Expectations suites"}[what]
    return (
        f"{what} folder {folder} does not exist (from {settings.source(setting)}): {setting.hint}, "
        f"to the folder holding your {holds}"
    )


def load_pipelines(folder: Path | None = None) -> list[PipelineConfig]:
    """Every pipeline config in the folder (default: the pipelines_dir setting); errors are raised together."""
    if folder is None:
        folder = settings.pipelines_dir()
        if not folder.is_dir():
            raise PipelineConfigError(_missing_folder("pipelines", folder, settings.PIPELINES_DIR))
    elif not folder.is_dir():
        raise PipelineConfigError(f"pipelines folder {folder} does not exist")
    configs, errors = [], []
    for path in sorted(folder.glob("*.yaml")):
        try:
            configs.append(load_pipeline(path))
        except PipelineConfigError as exc:
            errors.append(str(exc))
    for path in sorted(folder.glob("*.yml")):
        errors.append(f"{path}: use the .yaml extension (this file is not loaded)")
    if errors:
        raise PipelineConfigError("\n".join(errors))
    return configs


def pipeline_by_name(name: str) -> PipelineConfig:
    """The config of one pipeline, read at run time by the tasks."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise PipelineConfigError(f"invalid pipeline name {name!r}")
    return load_pipeline(settings.pipelines_dir() / f"{name}.yaml")
