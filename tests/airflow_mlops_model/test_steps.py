"""The model's own derived-feature step: online (rows as a client sends them) equals offline (the feature build)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.config import PipelineConfig, load_pipeline
from airflow_mlops.core.ingest.features import build_features, join_sources
from airflow_mlops.core.registry.models import client_columns, client_rows
from airflow_mlops.core.train import training as tr
from airflow_mlops_model.expressions import TreeError, columns_of
from airflow_mlops_model.steps import DerivedFeatures
from tests.airflow_mlops.config.test_expressions import SHIPPED, real_sources

DAYS = ["2013-01-01", "2013-02-08", "2013-06-15", "2013-12-30"]


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return load_pipeline(SHIPPED)


def as_json(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows through JSON and back, as a request body brings them: strings, numbers and nulls only."""
    records = json.loads(json.dumps(frame.to_dict("records"), default=str).replace("NaN", "null"))
    return pd.DataFrame.from_records(records, columns=list(frame.columns))


@pytest.mark.parametrize("ds", DAYS)
def test_the_model_derives_every_feature_as_the_feature_build_on_real_rows(cfg: PipelineConfig, ds: str) -> None:
    sources = real_sources(cfg, ds)
    offline = build_features(cfg, ds, sources)
    spec = tr.feature_spec(cfg, offline)
    step = spec.derive_step()
    assert step is not None and step.derived_columns == list(cfg.features.derived)
    base = join_sources(cfg, sources)
    sent = as_json(client_rows(base, spec))  # what a client sends: no derived column
    assert not set(cfg.features.derived) & set(sent.columns)
    online = step.fit(sent).transform(sent)
    key = [*cfg.features.key, "sched_dep_time", "dest"]
    assert not offline.duplicated(key).any()
    got = base[key].copy()  # client rows keep the order of the base rows
    for name in cfg.features.derived:
        got[f"{name}_online"] = online[name].to_numpy()
    both = offline.merge(got, on=key)
    assert len(both) == len(offline) == len(base) > 700
    for name in cfg.features.derived:
        want = pd.to_numeric(both[name]).astype("float64")
        got = pd.to_numeric(both[f"{name}_online"]).astype("float64")
        assert np.array_equal(want.to_numpy(), got.to_numpy(), equal_nan=True), name
        assert want.notna().sum() > 0.5 * len(want), name  # the comparison is on values, not on missing ones


def test_rows_carrying_the_derived_columns_pass_through(cfg: PipelineConfig) -> None:
    offline = build_features(cfg, DAYS[0], real_sources(cfg, DAYS[0]))
    step = tr.feature_spec(cfg, offline).derive_step()
    assert step is not None
    rows = offline[tr.feature_spec(cfg, offline).columns]  # feature-store rows: the base-only inputs are absent
    assert step.transform(rows) is rows


def test_a_missing_input_is_named(cfg: PipelineConfig) -> None:
    spec = tr.feature_spec(cfg)
    step = spec.derive_step()
    assert step is not None
    rows = pd.DataFrame([{c: None for c, _ in client_columns(spec) if c != "year"}])
    with pytest.raises(ValueError, match="lacks column\\(s\\) year, needed to compute"):
        step.transform(rows)
    bad = pd.DataFrame([{**{c: None for c, _ in client_columns(spec)}, "time_hour": "tomorrow"}])
    with pytest.raises(ValueError, match="'time_hour': 'tomorrow' is not an ISO 8601 date-time"):
        step.transform(bad)


@pytest.mark.parametrize(
    "tree",
    [
        ["call", "eval", [["column", "a"]], []],
        ["call", "__import__", [["constant", "os", "string"]], []],
        ["dt", ["column", "a"], "__class__"],
        ["binary", "@", ["column", "a"], ["column", "a"]],
        ["lambda", "a"],
        "a + 1",
    ],
)
def test_a_tree_outside_the_allow_list_is_refused_before_anything_runs(tree: object) -> None:
    with pytest.raises(TreeError):
        columns_of(tree)
    step = DerivedFeatures(inputs=[["a", "float64"]], derived=[["b", tree]])
    with pytest.raises(ValueError):
        step.fit(pd.DataFrame({"a": [1.0]}))


def test_every_parsed_expression_gives_an_allowed_tree(cfg: PipelineConfig) -> None:
    compiled = cfg.compiled_features
    for expression in [*compiled.derived.values(), compiled.label]:
        assert set(columns_of(expression.data)) == set(expression.columns)
        assert math.isfinite(len(json.dumps(expression.data)))  # plain data: JSON holds it as is
