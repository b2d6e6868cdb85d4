"""The serving fast path against the sklearn path on real trained pipelines, and its fallbacks."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import skops.io

from airflow_mlops.config import PipelineConfig
from airflow_mlops.config.train import ModelConfig
from airflow_mlops.core.lake.storage import open_lake
from airflow_mlops.core.registry.tracking import raw_rows
from airflow_mlops.core.train import training as tr
from airflow_mlops.serving import fastpath
from airflow_mlops.serving.app import ModelServer
from airflow_mlops.serving.config import ServerSettings
from airflow_mlops.serving.models import ServedModel
from airflow_mlops.serving.rows import RequestError
from tests.fixtures.training_data import day_range, flight_config, synthetic_features, write_partitions

HGB = "sklearn.ensemble.HistGradientBoostingClassifier"

# Every categorical mode, with imputation, scaling and infrequent categories; estimators with their own walker
# (HistGradientBoosting) and without (predict_proba on the built matrix).
CONFIGS: dict[str, dict[str, Any]] = {
    "native": {"estimator": HGB, "params": {"max_iter": 15}, "categorical": "native"},
    # max_bins 4 < 6 carriers: the OrdinalEncoder groups rare values (max_categories) into one code.
    "native_infrequent": {"estimator": HGB, "params": {"max_iter": 10, "max_bins": 4}, "categorical": "native"},
    "ordinal": {"estimator": HGB, "params": {"max_iter": 10}, "categorical": "ordinal"},
    "onehot": {"estimator": HGB, "params": {"max_iter": 10}, "categorical": "onehot"},
    "onehot_linear": {
        "estimator": "sklearn.linear_model.LogisticRegression",
        "params": {"max_iter": 500},
        "categorical": "onehot",
        "numeric_impute": "mean",
        "scale_numeric": True,
        "min_category_frequency": 300,  # rare values share the "infrequent" column
    },
    "ordinal_forest": {
        "estimator": "sklearn.ensemble.RandomForestClassifier",
        "params": {"n_estimators": 8, "max_depth": 6},
        "categorical": "ordinal",
        "numeric_impute": "median",
        "scale_numeric": True,
    },
}


@dataclass
class Data:
    cfg: PipelineConfig
    spec: tr.FeatureSpec
    split: tr.Split


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Data:
    cfg = flight_config()
    lake = open_lake(str(tmp_path_factory.mktemp("fastpath-lake")))
    write_partitions(lake, cfg, synthetic_features(cfg, day_range("2013-03-01", 10), rows_per_day=200, seed=11))
    window = tr.load_window(lake, cfg, "2013-03-10", 10)
    split = tr.split_by_time(window.frame, 0, 2)
    return Data(cfg, tr.feature_spec(cfg, window.frame), split)


def fit(data: Data, **model: Any) -> Any:
    model_cfg = ModelConfig.model_validate(model)
    pipeline = tr.build_estimator(model_cfg, data.spec.columns, data.spec.categorical, seed=3)
    with tr.thread_limit(1):
        return pipeline.fit(data.split.train[data.spec.columns], data.split.train[data.spec.label].to_numpy())


@pytest.fixture(scope="module")
def models(data: Data) -> dict[str, Any]:
    return {name: fit(data, **model) for name, model in CONFIGS.items()}


def request_rows(frame: pd.DataFrame, spec: tr.FeatureSpec) -> list[dict[str, Any]]:
    """Rows as the server has them after JSON decoding: strings or None, numbers or None."""
    rows = raw_rows(frame, spec).to_dict("records")
    return [{str(k): None if isinstance(v, float) and math.isnan(v) else v for k, v in r.items()} for r in rows]


def offline(model: Any, rows: list[dict[str, Any]], spec: tr.FeatureSpec) -> np.ndarray:
    """What the server computed before the fast path: the pipeline on the rows as a frame."""
    with tr.thread_limit(1):
        return tr.positive_scores(model, pd.DataFrame.from_records(rows, columns=spec.columns))


def compiled(model: Any, data: Data) -> fastpath.FastPath:
    example = raw_rows(data.split.holdout.head(5), data.spec)
    fast, detail = fastpath.compile_pipeline(model, data.spec.categorical, data.spec.numeric, example)
    assert fast is not None, detail
    return fast


def hard_rows(data: Data) -> list[dict[str, Any]]:
    """Holdout rows, then rows with holes, unseen categories, an all-missing row and integers for numbers."""
    rows = request_rows(data.split.holdout.head(60), data.spec)
    rng = np.random.default_rng(5)
    holes = []
    for row in rows[:30]:
        changed = dict(row)
        for col in rng.choice(data.spec.columns, size=6, replace=False):
            changed[str(col)] = None
        holes.append(changed)
    unseen = [{**row, "carrier": "ZZ", "dest": "nowhere", "origin": ""} for row in rows[:5]]
    all_missing = [dict.fromkeys(data.spec.columns)]
    integers = [
        {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in row.items()} for row in rows[:5]
    ]
    return rows + holes + unseen + all_missing + integers


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fast_path_gives_the_pipeline_scores(data: Data, models: dict[str, Any], config: str) -> None:
    model = models[config]
    fast = compiled(model, data)
    rows = hard_rows(data)
    expected = offline(model, rows, data.spec)
    assert np.isfinite(expected).all()
    # One batch, both tree walkers, and row by row (the single-row requests the server mostly gets).
    for got in (
        fast.scores(rows),
        fast.scores(rows, small_batch=len(rows)),
        np.concatenate([fast.scores([row]) for row in rows]),
    ):
        assert np.abs(got - expected).max() <= fastpath.TOLERANCE
        if fast.kind == "hist_gradient_boosting":  # its own walker: the same operations in the same order
            assert np.array_equal(got, expected)  # (other estimators' BLAS may round by batch shape)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_fast_matrix_is_what_the_estimator_gets_from_the_pipeline(
    data: Data, models: dict[str, Any], config: str
) -> None:
    model = models[config]
    rows = hard_rows(data)
    with tr.thread_limit(1):
        matrix = model[:-1].transform(pd.DataFrame.from_records(rows, columns=data.spec.columns))
        inner = getattr(model[-1], "_preprocessor", None)  # HistGradientBoosting's own re-encoding
        if inner is not None:
            matrix = inner.transform(matrix)
    np.testing.assert_array_equal(compiled(model, data).matrix(rows), np.asarray(matrix, dtype=np.float64))


@pytest.mark.parametrize("config", ["native", "native_infrequent"])
def test_python_tree_walk_equals_the_compiled_one_on_any_category_code(
    data: Data, models: dict[str, Any], config: str
) -> None:
    """Codes the pipeline never produces too (negative, unseen by the trees, fractional): the walkers agree."""
    fast = compiled(models[config], data)
    x = fast.matrix(request_rows(data.split.holdout.head(50), data.spec))
    categorical = np.flatnonzero(models[config][-1]._bin_mapper.is_categorical_)
    assert len(categorical) == len(data.spec.categorical)
    rng = np.random.default_rng(9)
    x[:, categorical] = rng.choice([np.nan, -1.0, 0.0, 1.0, 2.0, 2.5, 3.0, 5.0, 7.0, 100.0, 255.0], (50, 3))
    forest = fast._forest
    assert forest is not None
    np.testing.assert_array_equal(forest.proba(x, in_python=True), forest.proba(x, in_python=False))


def test_fast_path_of_a_model_loaded_from_skops(data: Data, models: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "model.skops"
    skops.io.dump(models["native"], path)
    loaded = skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path))
    rows = hard_rows(data)
    assert np.array_equal(compiled(loaded, data).scores(rows), offline(models["native"], rows, data.spec))


def test_integers_beyond_float_precision_are_left_to_the_pipeline(data: Data, models: dict[str, Any]) -> None:
    fast = compiled(models["native"], data)
    row = request_rows(data.split.holdout.head(1), data.spec)[0]
    fast.scores([{**row, "distance": 2**53}])  # still exact as a float
    with pytest.raises(fastpath.InexactInput):
        fast.scores([{**row, "distance": 2**53 + 1}])


def test_unsupported_shapes_fall_back_with_the_reason(data: Data, models: dict[str, Any]) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    spec = data.spec
    x, y = data.split.train[spec.columns], data.split.train[spec.label].to_numpy()
    odd = Pipeline(
        [
            ("features", tr.FeatureFrame(numeric=spec.numeric, categorical=spec.categorical)),
            (
                "prep",
                ColumnTransformer(
                    [
                        ("categorical", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                         spec.categorical),
                        ("numeric", FunctionTransformer(np.abs), spec.numeric),
                    ]
                ),
            ),
            ("model", HistGradientBoostingClassifier(max_iter=5)),
        ]
    ).fit(x, y)  # fmt: skip
    fast, reason = fastpath.compile_pipeline(odd, spec.categorical, spec.numeric)
    assert fast is None and "transformer 'numeric': numeric FunctionTransformer" in reason

    bare = HistGradientBoostingClassifier(max_iter=5).fit(x[spec.numeric], y)
    fast, reason = fastpath.compile_pipeline(bare, spec.categorical, spec.numeric)
    assert fast is None and "not a FeatureFrame -> ColumnTransformer -> estimator pipeline" in reason

    # A column never seen in training has no median: the imputer drops it, the fast path declines.
    empty = data.split.train.assign(plane_year=np.nan)
    model_cfg = ModelConfig.model_validate({"estimator": HGB, "params": {"max_iter": 5}, "numeric_impute": "median"})
    with pytest.warns(UserWarning, match="Skipping features without any observed values"):
        dropped = tr.build_estimator(model_cfg, spec.columns, spec.categorical, seed=3).fit(empty[spec.columns], y)
    fast, reason = fastpath.compile_pipeline(dropped, spec.categorical, spec.numeric)
    assert fast is None and "imputer without a value for every column" in reason


def test_the_load_time_check_refuses_a_fast_path_that_differs(data: Data, models: dict[str, Any]) -> None:
    fast = compiled(models["native"], data)
    # The fast path of one model checked against another model: any difference is caught.
    with pytest.raises(fastpath.Unsupported, match="differs from the sklearn path"):
        fastpath.check(fast, models["native_infrequent"], data.spec.categorical, data.spec.numeric, None)


def served_model(model: Any, data: Data, fast: fastpath.FastPath | None) -> ServedModel:
    return ServedModel(
        pipeline=data.cfg.name,
        name="m",
        version="1",
        run_id=None,
        model=model,
        categorical=tuple(data.spec.categorical),
        numeric=tuple(data.spec.numeric),
        loaded_at="now",
        fast=fast,
    )


@pytest.fixture()
def app(data: Data, tmp_path: Path) -> ModelServer:
    # The store is never polled here (no background threads): the tracking URI is not contacted.
    conf = ServerSettings(tracking_uri="http://127.0.0.1:9", token="t", lake_root=str(tmp_path / "lake"))
    return ModelServer(conf, configs=[data.cfg])


@pytest.mark.parametrize("with_fast_path", [True, False])
def test_server_scores_with_and_without_fast_path_alike(
    data: Data, models: dict[str, Any], app: ModelServer, with_fast_path: bool
) -> None:
    model = models["native"]
    app.store.states[data.cfg.name].served = served_model(
        model, data, compiled(model, data) if with_fast_path else None
    )
    rows = hard_rows(data)
    for batch in ([rows[0]], rows[:40], [{**rows[1], "distance": 2**60}]):  # the last one takes the pipeline path
        body = app._predict(data.cfg.name, json.dumps({"rows": batch}).encode(), "rid")
        expected = offline(model, batch, data.spec).tolist()
        assert body["predictions"] == expected and body["model_version"] == "1"
    logged = app.inference_log._buffer[data.cfg.name]
    assert len(logged) == 1 + 40 + 1
    assert list(logged[0])[: len(data.spec.columns)] == data.spec.columns  # the model's column order
    assert logged[-1]["distance"] == 2**60 and logged[-1]["prediction"] == body["predictions"][0]


@pytest.mark.parametrize("batch", [1, 20])
def test_server_checks_rows_one_at_a_time_and_in_batches_alike(
    data: Data, models: dict[str, Any], app: ModelServer, batch: int
) -> None:
    app.store.states[data.cfg.name].served = served_model(models["native"], data, None)
    good = request_rows(data.split.holdout.head(batch), data.spec)
    cases: dict[str, tuple[dict[str, Any], str | None]] = {
        "NaN": ({"temp": math.nan}, None),  # Python's json reads NaN: a missing value
        "-Infinity": ({"temp": -math.inf}, "rows[{i}].temp: expected a finite number or null, got -inf"),
        "bool": ({"distance": False}, "rows[{i}].distance: expected a number or null, got bool False"),
        "number as text": ({"carrier": 1.5}, "rows[{i}].carrier: expected a string or null, got float 1.5"),
        "list": ({"dest": ["JFK"]}, "rows[{i}].dest: expected a string or null, got list ['JFK']"),
    }
    for change, message in cases.values():
        rows = [*good[:-1], {**good[-1], **change}]
        body = json.dumps({"rows": rows}).encode()
        if message is None:
            assert len(app._predict(data.cfg.name, body, "rid")["predictions"]) == batch
        else:
            with pytest.raises(RequestError) as caught:
                app._predict(data.cfg.name, body, "rid")
            assert caught.value.status == 422 and caught.value.message == message.format(i=batch - 1)
