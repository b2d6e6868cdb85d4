"""The expression language: today's demo features unchanged on real days, DataFrame.eval's results for every
construct it shares, and everything else refused with the offending part, at config load."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from airflow_mlops import settings
from airflow_mlops.config import PipelineConfig, PipelineConfigError, load_pipeline
from airflow_mlops.config import expressions as ex
from airflow_mlops.config.expressions import COLUMN_KINDS, FUNCTIONS, ExpressionError, parse_expression
from airflow_mlops.core import demo
from airflow_mlops.core.ingest.features import build_features
from airflow_mlops.core.ingest.landing import read_landing_csv
from airflow_mlops.core.lake.hashing import frame_hash
from tests.fixtures.flights import inline_label_config

SHIPPED = settings.pipelines_dir() / "flight_delays.yaml"

# frame_hash of build_features on these days of the demo, computed with the DataFrame.eval evaluation this
# language replaced (commit d8c993b): the demo's features must not change.
DEMO_HASHES = {
    "2013-01-01": "434b9bf57b14d817f944c8a4eee1559ce0552210f9dfcd48746c5c63b2af4958",
    "2013-02-08": "799b0e28e5beabcb541fb15ec08b3048180759411a89bdaadcadc2942950fed5",  # blizzard: 475 unknown labels
    "2013-06-15": "daa25e3211e3248a63c36d4bb67cc2cb77b509ea1a9a66634688d2c81c952a7b",
    "2013-12-30": "3d020a851989c2fc30f0c3f3c97ff7295dd4fc454bbf46093f3bb88a7dfbe301",
}


@pytest.fixture(scope="module")
def cfg() -> PipelineConfig:
    """The demo config with the label computed from the flights rows, as when these hashes were taken (the
    shipped config reads it from the outcomes feed a day later: tests/airflow_mlops/core/ingest/test_labels.py)."""
    return inline_label_config()


def real_sources(cfg: PipelineConfig, ds: str) -> dict[str, pd.DataFrame]:
    """The typed source frames of one real day, as ingest reads the landing files."""
    files = {**demo.reference_files(cfg), **demo.landing_files(cfg, ds)}
    frames = {}
    for name in cfg.feature_sources:
        src = cfg.sources[name]
        path = src.landing_path(ds) if src.partitioned else src.path
        frames[name] = read_landing_csv(files[path], src.columns, path)
    return frames


_JOINED: dict[str, pd.DataFrame] = {}


def joined(cfg: PipelineConfig, ds: str) -> pd.DataFrame:
    """The base rows with the joined columns: what the expressions are evaluated on (read once per day)."""
    if ds not in _JOINED:
        _JOINED[ds] = _join(cfg, ds)
    return _JOINED[ds].copy()


def _join(cfg: PipelineConfig, ds: str) -> pd.DataFrame:
    frames = real_sources(cfg, ds)
    df = frames[cfg.features.base].reset_index(drop=True)
    for join in cfg.features.joins:
        right = frames[join.source][[*join.keys, *join.columns]].rename(columns=join.columns)
        df = df.merge(right, on=join.keys, how="left", validate="many_to_one")
    return df


def kinds(cfg: PipelineConfig) -> dict[str, ex.Kind]:
    out = {c: COLUMN_KINDS[t] for c, t in cfg.sources[cfg.features.base].columns.items()}
    for join in cfg.features.joins:
        out.update({dst: COLUMN_KINDS[cfg.sources[join.source].columns[c]] for c, dst in join.columns.items()})
    return out


@pytest.mark.parametrize("ds", sorted(DEMO_HASHES))
def test_demo_features_are_unchanged_on_real_days(cfg: PipelineConfig, ds: str) -> None:
    out = build_features(cfg, ds, real_sources(cfg, ds))
    assert len(out) > 700
    assert frame_hash(out) == DEMO_HASHES[ds]


def test_demo_expressions_match_dataframe_eval(cfg: PipelineConfig) -> None:
    df = joined(cfg, "2013-02-08")
    texts = [*cfg.features.derived.values(), cfg.features.label.expr, cfg.features.label.known]
    for text in texts:
        assert text is not None
        ours = parse_expression(text, kinds(cfg)).evaluate(df)
        pd.testing.assert_series_equal(ours, df.eval(text, engine="python"), check_names=False)


SHARED_WITH_EVAL = [
    "dep_delay + arr_delay",
    "dep_delay - 2 * arr_delay / 3",
    "distance // 7 % 5",
    "distance ** 2",
    "-dep_delay",
    "+distance",
    "arr_delay > 15",
    "arr_delay >= dep_delay",
    "carrier == 'AA'",
    'carrier != "UA"',
    "origin == dest",
    "0 < hour <= 12",
    "arr_delay > 15 and dep_delay > 15",
    "arr_delay > 15 & dep_delay > 15",
    "arr_delay > 15 or carrier == 'AA'",
    "arr_delay > 15 | carrier == 'AA' & hour < 10",
    "not (arr_delay > 15)",
    "~(carrier == 'AA')",
    "time_hour.dt.hour",
    "time_hour.dt.dayofweek",
    "time_hour.dt.month",
    "time_hour.dt.is_month_start",
    "time_hour.dt.day_of_year",
    "arr_delay.notna()",
    "tailnum.isna()",
    "dep_delay.abs()",
    "abs(dep_delay)",
    "dep_delay.clip(0, 60)",
    "dep_delay.clip(upper=60)",
    "arr_delay.fillna(0)",
    "temp.round(0)",
    "origin.isin(['JFK', 'LGA'])",
    "log1p(distance)",
    "log(distance)",
    "sqrt(distance)",
    "exp(-distance / 1000)",
    "expm1(precip)",
    "floor(temp / 10)",
    "ceil(temp / 10)",
    "year - plane_year",
    "plane_seats * 1.5 + 2",
    "1 + 2 * distance",
]


@pytest.mark.parametrize("text", SHARED_WITH_EVAL)
def test_constructs_shared_with_dataframe_eval_give_its_result(cfg: PipelineConfig, text: str) -> None:
    df = joined(cfg, "2013-02-08")
    ours = parse_expression(text, kinds(cfg)).evaluate(df)
    theirs = df.eval(text, engine="python")
    if isinstance(theirs.dtype, pd.BooleanDtype):
        # DataFrame.eval leaves some comparisons nullable (two string columns); ours are always true/false
        theirs = theirs.fillna(False).astype(bool)
    pd.testing.assert_series_equal(ours, theirs, check_names=False)


def test_functions_beyond_dataframe_eval(cfg: PipelineConfig) -> None:
    df = joined(cfg, "2013-01-01")
    k = kinds(cfg)

    def ev(text: str) -> pd.Series:
        return parse_expression(text, k).evaluate(df)

    expected = df["dep_delay"].where(df["dep_delay"] > 0, 0)
    pd.testing.assert_series_equal(ev("where(dep_delay > 0, dep_delay, 0)"), expected, check_names=False)
    assert ev("maximum(dep_delay, 0)").min() == 0 and ev("minimum(temp, 30)").max() == 30
    assert ev("notna(arr_delay)").equals(df["arr_delay"].notna())
    assert ev("isin(origin, ['EWR'])").sum() == (df["origin"] == "EWR").sum()
    assert ev("where(arr_delay > 15, 'late', 'on time')").isin(["late", "on time"]).all()
    noon = pd.Timestamp("2013-01-01 12:00", tz="UTC")
    assert ev("time_hour >= '2013-01-01 12:00'").equals(df["time_hour"] >= noon)
    assert ev("'2013-01-01T12:00:00+00:00' > time_hour").equals(noon > df["time_hour"])
    # a comparison with a missing value is false, as with NaN, whatever the column's dtype
    nullable = pd.DataFrame({"distance": pd.array([1, None, 3], dtype="Int64"), "carrier": ["a", None, "b"]})
    nullable["carrier"] = nullable["carrier"].astype("string")
    got = parse_expression("distance > 1 or carrier == 'a'", k).evaluate(nullable)
    assert got.tolist() == [True, False, True] and got.dtype == bool


def test_every_documented_example_parses(cfg: PipelineConfig) -> None:
    df = joined(cfg, "2013-01-01")
    for name, fn in FUNCTIONS.items():
        result = parse_expression(fn.example, kinds(cfg)).evaluate(df)
        assert len(result) == len(df), name


@pytest.mark.parametrize(
    ("text", "reason", "part"),
    [
        ("a + @pd.io.common.os.system('touch x')", "`@`", "a + @pd.io.common.os.system('touch x')"),
        ("__import__('os').system('touch x')", "function 'system' is not allowed", None),
        ("__import__('os')", "function '__import__' is not allowed", "__import__('os')"),
        ("distance.__class__", "attribute '__class__' is not allowed", "distance.__class__"),
        ("distance.values", "attribute 'values' is not allowed", "distance.values"),
        ("distance.apply(print)", "function 'apply' is not allowed", "distance.apply(print)"),
        ("arr_delay.notna().__class__.__base__", "attribute '__base__' is not allowed", None),
        ("eval('1')", "function 'eval' is not allowed", "eval('1')"),
        ("open('/etc/passwd')", "function 'open' is not allowed", None),
        ("distance[0]", "indexing ([...]) is not allowed", "distance[0]"),
        ("(lambda: 1)()", "only the listed functions may be called", None),
        ("[d for d in distance]", "a comprehension is not allowed", None),
        ("distance if hour > 3 else 0", "use where(condition, then, otherwise)", None),
        ("f'{distance}'", "an f-string is not allowed", None),
        ("(x := distance)", "an assignment (:=) is not allowed", None),
        ("distance; 1", "not a valid expression", None),
        ("distance = 1", "not a valid expression", None),
        ("`distance`", "backticks are not supported", None),
        ("distnace * 2", "unknown column 'distnace'", "distnace"),
        ("1 + 2", "uses no column", None),
        ("carrier + 1", "cannot apply + to a string and a number", "carrier + 1"),
        ("carrier > 3", "cannot compare a string with a number", None),
        ("distance and hour", "combines conditions", None),
        ("not distance", "needs a condition", None),
        ("distance.dt.hour", ".dt needs a datetime, not a number", None),
        ("time_hour.dt.tz", "unknown .dt field 'tz'", None),
        ("time_hour.dt.strftime('%Y')", "function 'strftime' is not allowed", None),
        ("time_hour.dt", "attribute 'dt' is not allowed", None),
        ("time_hour - time_hour", "cannot apply - to a datetime and a datetime", None),
        ("distance.log1p()", "log1p is a function: write log1p(...)", None),
        ("clip(distance)", "clip needs lower or upper", None),
        ("clip(distance, 0, 1, 2)", "clip takes at most 3 arguments", None),
        ("round(distance, hour)", "decimals must be a whole number", None),
        ("clip(distance, low=0)", "clip has no argument 'low'", None),
        ("isin(origin, dest)", "isin needs a list of constants", None),
        ("isin(origin, [dest])", "isin takes constants only", None),
        ("isin(origin, [1])", "cannot equal a string", None),
        ("where(distance, 1, 0)", "condition must be a bool", None),
        ("fillna(distance, 'x')", "do not mix", None),
        ("distance + 10 ** 10 ** 10", "constant power too large", None),
        ("distance + 99999999999999999999", "outside the 64-bit range", None),
        ("distance + 1e999", "not finite", None),
        ("distance + 1 / 0", "cannot compute: division by zero", "1 / 0"),
        ("time_hour > 'yesterday'", "'yesterday' is not a date or time", "'yesterday'"),
        ("distance + None", "constant None is not allowed", None),
        ("distance << 2", "operator LShift is not allowed", None),
        ("distance @ distance", "`@`", None),
        ("distance is None", "comparison Is is not allowed", None),
        ("origin in ['JFK']", "comparison In is not allowed", None),
        ("distance + " * 150 + "1", "longer than 1000 characters", None),
        ("abs(" * 40 + "distance" + ")" * 40, "nested more than", None),
        ("-" * 60 + "distance", "nested more than", None),
        (" + ".join(["hour"] * 120), "more than 200 parts", None),
        ("", "empty expression", None),
    ],
)
def test_refused(cfg: PipelineConfig, text: str, reason: str, part: str | None) -> None:
    with pytest.raises(ExpressionError) as err:
        parse_expression(text, kinds(cfg))
    assert reason in str(err.value)
    if part is not None:
        assert err.value.part == part


def write_config(tmp_path: Path, mutate) -> Path:
    data = yaml.safe_load(SHIPPED.read_text())
    mutate(data)
    path = tmp_path / "flight_delays.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_the_code_execution_exploit_is_refused_at_load(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"distance + @pd.io.common.os.system('touch {marker}')"
    path = write_config(tmp_path, lambda d: d["features"]["derived"].update(pwn=payload))
    with pytest.raises(PipelineConfigError) as err:
        load_pipeline(path)
    message = str(err.value)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith("pwn:"))
    assert f"{path}:{line}: features.derived.pwn: `@` (a Python variable or matrix product) is not allowed" in message
    assert "os.system" in message  # the offending part
    assert not marker.exists()


def test_an_attribute_chain_in_the_label_is_refused_at_load(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = f"arr_delay.notna().__class__.__init__.__globals__['os'].system('touch {marker}') == 0"
    path = write_config(tmp_path, lambda d: d["features"]["label"].update(known=payload))
    with pytest.raises(PipelineConfigError, match=r"features\.label\.known: .* is not allowed"):
        load_pipeline(path)
    assert not marker.exists()


def test_an_unknown_column_is_a_load_error_with_the_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, lambda d: d["features"]["derived"].update(velocity="distance / air_tme"))
    with pytest.raises(PipelineConfigError) as err:
        load_pipeline(path)
    [problem] = err.value.problems
    assert (problem.key, problem.line) == ("features.derived.velocity", _line_of(path, "velocity:"))
    assert "unknown column 'air_tme'" in problem.message and "`air_tme`" in problem.message


@pytest.mark.parametrize(
    ("task", "expr", "wanted", "kind"),
    [
        ("binary", "carrier", "a condition", "string"),
        ("binary", "arr_delay", "a condition", "number"),
        ("regression", "carrier", "a number", "string"),
        ("regression", "arr_delay > 15", "a number", "bool"),
        ("multiclass", "arr_delay > 15", "a text or a number", "bool"),
    ],
)
def test_the_label_must_suit_the_task(tmp_path: Path, task: str, expr: str, wanted: str, kind: str) -> None:
    def mutate(d: dict) -> None:
        d["features"]["label"].update(expr=expr)
        d["train"] = {"task": task, "min_rows": 10}

    path = write_config(tmp_path, mutate)
    with pytest.raises(
        PipelineConfigError, match=rf"features\.label\.expr: must be {wanted} \(train.task {task}\), but gives a {kind}"
    ):
        load_pipeline(path)


@pytest.mark.parametrize(("task", "expr"), [("regression", "arr_delay"), ("multiclass", "carrier")])
def test_a_label_of_the_task_loads(tmp_path: Path, task: str, expr: str) -> None:
    def mutate(d: dict) -> None:
        d["features"]["label"].update(expr=expr)
        d["train"] = {"task": task, "min_rows": 10}

    cfg = load_pipeline(write_config(tmp_path, mutate))
    assert cfg.train.task == task and cfg.compiled_features.label.text == expr


def test_derived_features_may_use_earlier_ones_only(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:
        d["features"]["derived"].update({"a": "distance * 2", "b": "a + 1", "c": "d + 1", "d": "a"})

    with pytest.raises(PipelineConfigError) as err:
        load_pipeline(write_config(tmp_path, mutate))
    assert [p.key for p in err.value.problems] == ["features.derived.c"]
    assert "unknown column 'd'" in str(err.value)


def test_expressions_are_parsed_once_at_load(cfg: PipelineConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parse(*args, **kwargs):
        raise AssertionError("parsed again at run time")

    monkeypatch.setattr(ex, "parse_expression", no_parse)
    monkeypatch.setattr("airflow_mlops.config.features.parse_expression", no_parse)
    out = build_features(cfg, "2013-01-01", real_sources(cfg, "2013-01-01"))
    assert frame_hash(out) == DEMO_HASHES["2013-01-01"]


def _line_of(path: Path, start: str) -> int:
    return next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith(start))
