"""The numpy fast path of derived features: the same answers as the model's own step in pandas, or that step's."""

from __future__ import annotations

import copy
import json
import math
import random
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sklearn.pipeline import Pipeline

from airflow_mlops.config import PipelineConfig, load_pipeline
from airflow_mlops.core.ingest.features import build_features, join_sources
from airflow_mlops.core.train import training as tr
from airflow_mlops.serving import derived
from airflow_mlops.serving.models import BaseRows, ServedModel, base_rows, check_derivation
from airflow_mlops.serving.rows import RequestError, parse_rows
from airflow_mlops_model.expressions import DT_FIELDS
from airflow_mlops_model.steps import DerivedFeatures
from tests.airflow_mlops.config.test_expressions import SHIPPED, real_sources
from tests.fixtures.served_models import json_rows

DAYS = ["2013-01-01", "2013-06-15", "2013-12-30"]
Rows = list[dict[str, Any]]


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    return load_pipeline(SHIPPED)


def served_base(step: DerivedFeatures, categorical: list[str], numeric: list[str]) -> BaseRows:
    base = base_rows(Pipeline([("derive", step)]), "model", "1", categorical, numeric)
    assert base is not None
    return base


def flight_rows(cfg: PipelineConfig, ds: str) -> tuple[BaseRows, Rows]:
    """The shipped pipeline's base form and a real day's flights as a client sends them."""
    sources = real_sources(cfg, ds)
    spec = tr.feature_spec(cfg, build_features(cfg, ds, sources))
    step = spec.derive_step()
    assert step is not None
    return served_base(step, spec.categorical, spec.numeric), json_rows(join_sources(cfg, sources), spec, base=True)


def both(base: BaseRows, rows: Rows) -> tuple[Rows, Rows]:
    """The rows completed by the model's step (pandas) and by the fast path, which must take them."""
    want, got = copy.deepcopy(rows), copy.deepcopy(rows)
    base.complete_pandas(want)
    assert base.fast is not None
    base.fast.complete(got)
    return want, got


def assert_same(want: Rows, got: Rows) -> None:
    """Equal values of equal types (float or None), row by row."""
    assert len(want) == len(got)
    for i, (a, b) in enumerate(zip(want, got, strict=True)):
        assert [(k, type(v)) for k, v in a.items()] == [(k, type(v)) for k, v in b.items()], i
        for key in a:
            same = a[key] == b[key] or (isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key]))
            assert same, (i, key, a[key], b[key])


def shifted(stamp: str, spelling: str) -> str:
    """A UTC ISO time (as `client_rows` writes it) spelled another way that means the same instant."""
    naive = stamp.removesuffix("+00:00")
    if spelling == "utc":
        return stamp
    if spelling == "naive":
        return naive
    if spelling == "z":
        return f"{naive}Z"
    if spelling == "space":
        return naive.replace("T", " ")
    if spelling == "minutes":
        return naive[:16]
    if spelling == "fraction":
        return f"{naive}.123456789+00:00"
    # the same instant, five hours west (the day may change: dayofweek must follow)
    return datetime.fromisoformat(stamp).astimezone(timezone(timedelta(hours=-5))).isoformat()


@pytest.mark.parametrize("ds", DAYS)
def test_fast_path_gives_the_model_steps_answers_on_real_rows(cfg: PipelineConfig, ds: str) -> None:
    base, rows = flight_rows(cfg, ds)
    assert base.fast is not None and base.derivation == "numpy fast path", base.derivation
    assert base.fast.columns == ["day_of_week", "plane_age", "sched_block_minutes"]
    want, got = both(base, rows)  # all at once
    assert_same(want, got)
    assert sum(r["plane_age"] is None for r in want) < len(want) / 2  # values compared, not missing ones
    for row in rows[:40]:  # one by one, as most requests come
        assert_same(*both(base, [row]))


@pytest.mark.parametrize("ds", DAYS[:2])
def test_fast_path_equals_the_model_step_on_nulls_number_mixes_and_time_spellings(cfg: PipelineConfig, ds: str) -> None:
    base, rows = flight_rows(cfg, ds)
    rng = random.Random(ds)
    numbers = ["year", "plane_year", "sched_arr_time", "sched_dep_time"]

    def varied(spellings: list[str]) -> Rows:
        out = []
        for i, row in enumerate(rows[:120]):
            row = dict(row)
            if row["time_hour"] is not None:
                row["time_hour"] = shifted(row["time_hour"], spellings[i % len(spellings)])
            for column in numbers:
                if row[column] is not None and rng.random() < 0.4:
                    row[column] = int(row[column])  # JSON integers: int64 columns, or mixed with floats
                if rng.random() < 0.1:
                    row[column] = None
            if rng.random() < 0.1:
                row["time_hour"] = None
            out.append(row)
        return out

    # A batch mixes naive times with UTC ones, or times at several offsets (not naive ones with those: below).
    for spellings in (["utc", "naive", "z", "space", "minutes", "fraction"], ["utc", "z", "fraction", "west"]):
        sent = varied(spellings)
        assert_same(*both(base, sent))
        for row in sent[:60]:
            assert_same(*both(base, [row]))
    # Columns of integers only, of floats only, of whole and fractional numbers, all missing: each typed so.
    for fill in (2013, 2013.0, 2013.5, None):
        assert_same(*both(base, [{**row, "year": fill, "plane_year": fill} for row in rows[:5]]))
    for stamp in ("2013-03-31T23:30:00-01:00", "2012-02-29T00:00:00+00:00", "2013-12-31 23:59:59.999999999"):
        assert_same(*both(base, [{**rows[0], "time_hour": stamp}]))


@pytest.mark.parametrize(
    "change",
    [
        {"time_hour": "2013-3-5"},  # ISO 8601 pandas reads, spelled otherwise than clients write it
        {"time_hour": "20130305T1000"},
        {"time_hour": "2013-03-05T10:00:00+0000"},
        {"time_hour": "1500-01-01T00:00:00"},  # beyond pandas' timestamps
        {"year": 2**60},
        {"sched_dep_time": 2.0**60},
    ],
)
def test_values_the_fast_path_does_not_replay_are_left_to_the_model_step(
    cfg: PipelineConfig, change: dict[str, Any]
) -> None:
    base, rows = flight_rows(cfg, DAYS[0])
    sent = [{**rows[0], **change}, rows[1]]
    assert base.fast is not None
    with pytest.raises(derived.Unsupported):
        base.fast.complete(copy.deepcopy(sent))
    want = copy.deepcopy(sent)
    try:
        base.complete_pandas(want)
    except (ValueError, TypeError) as exc:  # the request's error: the model step's words
        with pytest.raises(type(exc), match=re.escape(str(exc))):
            base.complete(copy.deepcopy(sent))
        return
    got = copy.deepcopy(sent)
    base.complete(got)
    assert_same(want, got)


def test_naive_times_among_times_at_an_offset_are_left_to_the_model_step(cfg: PipelineConfig) -> None:
    """pandas reads a naive time after one at an offset in the same column at that offset, not as UTC."""
    base, rows = flight_rows(cfg, DAYS[0])
    sent = [{**rows[0], "time_hour": "2013-06-04T22:05:00+03:30"}, {**rows[1], "time_hour": "2013-06-04T22:05:00"}]
    assert base.fast is not None
    with pytest.raises(derived.Unsupported, match="naive date-times mixed"):
        base.fast.complete(copy.deepcopy(sent))
    want, got = copy.deepcopy(sent), copy.deepcopy(sent)
    base.complete_pandas(want)
    base.complete(got)
    assert_same(want, got)
    for row in sent:  # alone, each is replayed
        assert_same(*both(base, [row]))


def test_an_unreadable_time_gets_the_model_steps_error(cfg: PipelineConfig) -> None:
    base, rows = flight_rows(cfg, DAYS[0])
    for text in ("yesterday", "2013-02-30T10:00:00"):
        with pytest.raises(ValueError, match=f"'time_hour': '{text}' is not an ISO 8601 date-time"):
            base.complete([{**rows[0], "time_hour": text}])


def synthetic_step(derived_trees: dict[str, Any]) -> DerivedFeatures:
    inputs = [["a", "int64"], ["b", "float64"], ["t", "datetime"], ["s", "string"], ["f", "bool"]]
    return DerivedFeatures(inputs=inputs, derived=[[name, tree] for name, tree in derived_trees.items()])


def col(name: str) -> list[Any]:
    return ["column", name]


def num(value: float) -> list[Any]:
    return ["constant", value, "number"]


SUPPORTED: dict[str, Any] = {
    **{f"t_{field}": ["dt", col("t"), field] for field in DT_FIELDS},
    "neg": ["unary", "-", col("a")],
    "pos": ["unary", "+", col("b")],
    **{f"op{i}": ["binary", op, col("a"), col("b")] for i, op in enumerate(["+", "-", "*", "/", "//", "%"])},
    "pow": ["binary", "**", col("b"), num(2)],
    "ipow": ["binary", "**", col("a"), num(3)],
    "scalar": ["binary", "-", num(10), ["binary", "*", num(2), col("a")]],
    "mixed": ["binary", "+", ["dt", col("t"), "hour"], ["binary", "//", col("a"), num(7)]],
    "half": ["binary", "/", col("a"), num(2)],
    "earlier": ["binary", "*", col("op0"), num(0.5)],  # reads a derived column
    **{
        name: ["call", name, [col("b")], []]
        for name in ["abs", "log", "log1p", "exp", "expm1", "sqrt", "floor", "ceil"]
    },
    "minimum": ["call", "minimum", [col("a"), col("b")], []],
    "maximum": ["call", "maximum", [col("b"), num(1.5)], []],
}


def synthetic_rows(n: int, seed: int) -> Rows:
    """Numbers of both types, negative ones, nulls; times naive (even seeds) or at offsets from UTC (odd)."""
    rng = random.Random(seed)
    zones = ["", "Z", "+00:00"] if seed % 2 == 0 else ["Z", "+03:30", "-11:00", "+00:00"]
    rows = []
    for _ in range(n):
        a = rng.choice([rng.randint(-500, 500), float(rng.randint(1, 50)), None])
        b = rng.choice([rng.uniform(-100.0, 100.0), float(rng.randint(1, 9)), rng.randint(1, 9), None])
        day = f"20{rng.randint(10, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        time = f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}{rng.choice(zones)}"
        t = rng.choice([time, time, day if seed % 2 == 0 else time, None])
        rows.append({"a": a, "b": b, "t": t, "s": None, "f": None})
    return rows


def test_every_supported_node_gives_the_model_steps_answers() -> None:
    base = served_base(synthetic_step(SUPPORTED), [], list(SUPPORTED))
    assert base.fast is not None, base.derivation
    replayed = 0
    for seed in range(40):
        rows = [row for row in synthetic_rows(12, seed) if row["a"] != 0 and row["b"] != 0]  # divisions by zero
        for batch in (rows, rows[:1], rows[1:3]):
            want = copy.deepcopy(batch)
            base.complete_pandas(want)
            got = copy.deepcopy(batch)
            try:
                base.fast.complete(got)
            except derived.Unsupported:  # e.g. a negative integer power: pandas decides
                continue
            assert_same(want, got)
            replayed += 1
    assert replayed > 60


def test_a_derived_column_the_model_reads_as_text_is_written_as_the_model_step_writes_it() -> None:
    step = synthetic_step({"code": ["binary", "+", col("a"), num(1)], "hour": ["dt", col("t"), "hour"]})
    base = served_base(step, ["code", "hour"], [])
    assert base.fast is not None and base.derived_categorical == ("code", "hour")
    rows = synthetic_rows(30, seed=1)
    assert_same(*both(base, rows))
    for row in rows:
        assert_same(*both(base, [row]))


@pytest.mark.parametrize(
    "tree, why",
    [
        (["compare", [">"], [col("a"), num(1)]], "node compare"),
        (["call", "isin", [col("a")], [1, 2]], "node call isin"),
        (["binary", "+", col("s"), col("s")], "reads 's' of type string"),
        (["binary", "+", col("f"), num(1)], "reads 'f' of type bool"),
        (["binary", "-", col("t"), col("t")], "a date-time used as a number"),
        (["constant", "x", "string"], "constant 'x' of kind string"),
        (["call", "round", [col("b"), num(1)], []], "node call round"),
        (["binary", "+", col("a"), num(1)], "x is also an input"),
    ],
)
def test_trees_outside_the_fast_path_are_computed_by_the_model_step(tree: Any, why: str) -> None:
    step = synthetic_step({"x": tree})
    if why == "x is also an input":
        step.inputs = [*step.inputs, ["x", "float64"]]
    base = served_base(step, ["x"], [])
    assert base.fast is None and base.derivation.startswith("pandas (no fast path") and why in base.derivation
    rows = [{"a": 3, "b": 1.5, "t": "2013-03-05T10:00:00", "s": "x", "f": True}]
    want = copy.deepcopy(rows)
    try:
        base.complete_pandas(want)
    except (ValueError, TypeError):
        return
    base.complete(rows)
    assert rows == want


def test_divisions_by_zero_are_left_to_the_model_step() -> None:
    trees = {"q": ["binary", "//", col("a"), col("a")], "r": ["binary", "%", num(7), col("a")]}
    base = served_base(synthetic_step(trees), [], ["q", "r"])
    assert base.fast is not None
    rows = [{"a": 0, "b": None, "t": None, "s": None, "f": None}, {"a": 2, "b": None, "t": None, "s": None, "f": None}]
    with pytest.raises(derived.Unsupported, match="division by zero"):
        base.fast.complete(copy.deepcopy(rows))
    want, got = copy.deepcopy(rows), copy.deepcopy(rows)
    base.complete_pandas(want)
    base.complete(got)
    assert_same(want, got)  # pandas' integer division by zero: inf or NaN, written as null


def test_the_load_time_check_drops_a_fast_path_that_differs(cfg: PipelineConfig) -> None:
    base, rows = flight_rows(cfg, DAYS[0])
    checked = check_derivation(base, json_rows_frame(rows[:5]))
    assert checked.fast is base.fast and checked.derivation == "numpy fast path, checked on 7 batches"
    # A fast path replaying other trees than the model's step (say, a stale one) is found out and dropped.
    other = DerivedFeatures(inputs=base.derive.inputs, derived=[[n, ["binary", "+", tree, num(1)]]
                                                                for n, tree in base.derive.derived])  # fmt: skip
    wrong = BaseRows(**{**base.__dict__, "fast": derived.FastDerive(other)})
    dropped = check_derivation(wrong, json_rows_frame(rows[:5]))
    assert dropped.fast is None and dropped.derivation.startswith("pandas (no fast path: it differs: day_of_week")
    got = copy.deepcopy(rows[:3])
    dropped.complete(got)
    want = copy.deepcopy(rows[:3])
    base.complete_pandas(want)
    assert_same(want, got)


def json_rows_frame(rows: Rows) -> Any:
    """Rows as the logged input example holds them (a DataFrame of the base columns)."""
    import pandas as pd

    return pd.DataFrame.from_records(rows)


@pytest.mark.parametrize(
    "change, status, message",
    [
        ({"a": 2**63}, 400, "rows[{i}].a: integer out of range"),
        ({"b": -(2**64)}, 400, "rows[{i}].b: integer out of range"),
        ({"a": True}, 422, "rows[{i}].a: expected a number or null, got bool True"),
        ({"f": 1}, 422, "rows[{i}].f: expected true, false or null, got int 1"),
        ({"t": 5}, 422, "rows[{i}].t: expected a string or null, got int 5"),
        ({"y": 1}, 422, "rows[{i}]: unknown field(s) y"),
    ],
)
def test_base_rows_are_checked_in_batches_as_one_at_a_time(change: dict[str, Any], status: int, message: str) -> None:
    """Batches of base rows are checked column-wise (faster), with the answers of the row-by-row check."""
    base = served_base(synthetic_step({"x": ["binary", "*", col("a"), col("b")]}), [], ["x"])
    assert (base.categorical, base.numeric, base.flags) == (("t", "s"), ("a", "b"), ("f",))
    served = ServedModel("p", "model", "1", None, None, (), ("x",), "now", base=base)
    good = [{**row, "s": "text", "f": i % 3 == 0 or None} for i, row in enumerate(synthetic_rows(8, seed=3))]
    parsed = parse_rows(json.dumps({"rows": good}).encode(), served, 50)
    assert parsed.form is base and parsed.exact and parsed.rows == good
    for batch in (1, 8):
        rows = [*good[: batch - 1], {**good[batch - 1], **change}]
        with pytest.raises(RequestError) as caught:
            parse_rows(json.dumps({"rows": rows}).encode(), served, 50)
        assert caught.value.status == status and caught.value.message.startswith(message.format(i=batch - 1))
