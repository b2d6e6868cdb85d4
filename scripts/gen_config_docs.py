"""Renders docs/configuration.md from the pipeline config models; `--check` exits 1 when the page is stale."""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))  # also runs without the editable install

from airflow_mlops import settings  # noqa: E402
from airflow_mlops.config import (  # noqa: E402
    PipelineConfig,
    PipelineConfigError,
    expressions,
    parse_pipeline,
)
from airflow_mlops.config.train import (  # noqa: E402
    DEFAULT_PRIMARY,
    DENIED_MODULES,
    LOWER_IS_BETTER,
    METRIC_NAMES,
    TASK_METRICS,
)
from airflow_mlops.stack.settings import parse_settings  # noqa: E402

OUTPUT = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "include" / "pipelines" / "flight_delays.yaml"
STACK_SETTINGS = ROOT / "mlops.env"
REGENERATE = "python scripts/gen_config_docs.py"

SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean", date: "date (YYYY-MM-DD)"}


class SchemaRenderError(RuntimeError):
    """The models use a type or constraint this generator cannot describe yet; the message says which."""


# Types -------------------------------------------------------------------------------------------


def _unwrap(tp: Any) -> tuple[Any, list[Any]]:
    """The type inside `Annotated[...]` and its constraint metadata."""
    meta: list[Any] = []
    while typing.get_origin(tp) is typing.Annotated:
        base, *extras = typing.get_args(tp)
        for extra in extras:
            meta.extend(extra.metadata if isinstance(extra, FieldInfo) else [extra])
        tp = base
    return tp, meta


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _join_or(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _constraints(meta: list[Any], tp: Any) -> list[str]:
    def unit(n: int) -> str:
        if tp is str:
            return "character" if n == 1 else "characters"
        return "entry" if n == 1 else "entries"

    out: list[str] = []
    for item in meta:
        if isinstance(item, annotated_types.Ge):
            out.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            out.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            out.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            out.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            out.append(f"at least {item.min_length} {unit(item.min_length)}")
        elif isinstance(item, annotated_types.MaxLen):
            out.append(f"at most {item.max_length} {unit(item.max_length)}")
        elif type(item).__name__ == "_PydanticGeneralMetadata" and set(vars(item)) == {"pattern"}:
            out.append(f"matching `{vars(item)['pattern']}`")
        else:
            raise SchemaRenderError(f"no wording for the constraint {item!r}: extend _constraints in {__file__}")
    return out


def section_anchor(path: str) -> str:
    """GitHub's anchor of the heading of a section (`ingest.sensor` -> `ingestsensor`)."""
    text = (path or "top level").lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _model_link(path: str) -> str:
    return f"[`{path}`](#{section_anchor(path)})"


def type_label(tp: Any, path: str) -> str:
    """Readable type of a key at `path`, with its constraints and links to nested sections."""
    tp, meta = _unwrap(tp)
    label = _bare_label(tp, path)
    cons = _constraints(meta, tp)
    return ", ".join([label, *cons])


def _bare_label(tp: Any, path: str) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if tp in SCALARS:
        return SCALARS[tp]
    if _is_model(tp):
        return _model_link(path)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if _is_union(tp):
        arms = [a for a in args if a is not type(None)]
        labels = [_paren(type_label(a, path)) for a in arms]
        return _join_or(labels + (["null"] if len(arms) < len(args) else []))
    if origin is list:
        inner = type_label(args[0], path + "[]")
        return f"list of {inner}s" if inner in SCALARS.values() else f"list of {_paren(inner)}"
    if origin is dict:
        return f"mapping of {_paren(type_label(args[0], path))} to {_paren(type_label(args[1], path + '.<name>'))}"
    raise SchemaRenderError(f"no wording for the type {tp!r} of {path}: extend _bare_label in {__file__}")


def _paren(label: str) -> str:
    return f"({label})" if " or " in label or ", " in label else label


def _models_in(tp: Any, path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """The models nested in a key's type, with the path of their section."""
    tp, _ = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_model(tp):
        yield path, tp
    elif origin is list:
        yield from _models_in(args[0], path + "[]")
    elif origin is dict:
        yield from _models_in(args[1], path + ".<name>")
    elif _is_union(tp):
        for arm in args:
            yield from _models_in(arm, path)


# The reference -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Section:
    """The keys of one model, found at `path` in the file ("" is the top level)."""

    path: str
    model: type[BaseModel]


def sections(model: type[BaseModel] = PipelineConfig, path: str = "") -> Iterator[Section]:
    """Every model of the schema, depth first in key order."""
    yield Section(path, model)
    for name, field in model.model_fields.items():
        for sub_path, sub_model in _models_in(field.annotation, _key_path(path, name)):
            yield from sections(sub_model, sub_path)


def _key_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _doc(model: type[BaseModel]) -> str:
    return inspect.cleandoc(model.__doc__ or "")


def field_description(field: FieldInfo) -> str:
    """The key's description, else the docstring of the model it holds."""
    if field.description:
        return field.description
    models = {m for _, m in _models_in(field.annotation, "")}
    return _doc(models.pop()).split("\n")[0] if len(models) == 1 else ""


def yaml_value(value: Any) -> str:
    if isinstance(value, date):
        return value.isoformat()
    return json.dumps(value, default=str)


def default_label(field: FieldInfo) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "its keys' defaults"
    return f"`{yaml_value(value)}`"


def md_text(text: str) -> str:
    """Text for a table cell: `<` and `>` outside code spans escaped (else read as HTML), pipes escaped."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


def render_section(section: Section) -> str:
    title = f"`{section.path}`" if section.path else "Top level"
    lines = [f"### {title}", "", md_text(_doc(section.model)), ""]
    lines += ["| Key | Type | Default | Description |", "|---|---|---|---|"]
    for name, field in section.model.model_fields.items():
        path = _key_path(section.path, name)
        cells = [f"`{path}`", type_label(_field_type(field), path), default_label(field), field_description(field)]
        lines.append("| " + " | ".join(md_text(c) if i == 3 else c.replace("|", "\\|") for i, c in enumerate(cells)))
        lines[-1] += " |"
    return "\n".join(lines)


def _field_type(field: FieldInfo) -> Any:
    """The key's type with the constraints given in its Field(...) put back as Annotated metadata."""
    if field.metadata:
        return typing.Annotated[(field.annotation, *field.metadata)]
    return field.annotation


def undocumented_keys() -> list[str]:
    """Keys with neither a description nor a documented model: worth a `description=` in the schema."""
    return [
        _key_path(s.path, name)
        for s in sections()
        for name, field in s.model.model_fields.items()
        if not field_description(field)
    ]


def render_reference() -> str:
    found = list(sections())
    anchors = [section_anchor(s.path) for s in found]
    if len(set(anchors)) != len(anchors):
        raise SchemaRenderError(f"two sections share a heading anchor: {sorted(anchors)}")
    toc = ", ".join(_model_link(s.path) if s.path else "[top level](#top-level)" for s in found)
    return "\n\n".join([f"Sections: {toc}.", *(render_section(s) for s in found)])


# The annotated example ---------------------------------------------------------------------------


def annotate_example(text: str) -> str:
    """The YAML text with each schema key's description as a comment line above it; the file's own comments stay."""
    notes: dict[int, str] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        _collect_notes(root, PipelineConfig, notes)
    out: list[str] = []
    for number, line in enumerate(text.splitlines()):
        if number in notes:
            indent = len(line) - len(line.lstrip(" "))
            out.append(f"{' ' * indent}# {notes[number]}")
        out.append(line)
    return "\n".join(out) + "\n"


def _collect_notes(node: yaml.Node, model: type[BaseModel], notes: dict[int, str]) -> None:
    if not isinstance(node, yaml.MappingNode):
        return
    for key_node, value_node in node.value:
        field = model.model_fields.get(key_node.value)
        if field is None:
            continue
        text = field_description(field)
        if text:
            notes.setdefault(key_node.start_mark.line, text)
        _collect_value_notes(value_node, field.annotation, notes)


def _collect_value_notes(node: yaml.Node, tp: Any, notes: dict[int, str]) -> None:
    tp, _ = _unwrap(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_model(tp):
        _collect_notes(node, tp, notes)
    elif origin is list and isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _collect_value_notes(item, args[0], notes)
    elif origin is dict and isinstance(node, yaml.MappingNode):
        for _, item in node.value:
            _collect_value_notes(item, args[1], notes)
    elif _is_union(tp) and isinstance(node, yaml.MappingNode):
        # A mapping can only be the model arm of a union (lists and scalars are not mappings).
        for arm in args:
            arm_type, _ = _unwrap(arm)
            if _is_model(arm_type) or typing.get_origin(arm_type) is dict:
                _collect_value_notes(node, arm, notes)
                return


def example_error(text: str) -> str:
    """The real error message for the example with two mistakes: a value out of range and a misspelt key."""
    raw = yaml.safe_load(text)
    ingest = raw.setdefault("ingest", {})
    ingest.setdefault("sensor", {})["poke_interval_seconds"] = 0
    ingest["catch_up"] = ingest.pop("catchup", True)
    try:
        parse_pipeline(yaml.safe_dump(raw, sort_keys=False), "include/pipelines/flight_delays.yaml")
    except PipelineConfigError as exc:
        return str(exc)
    raise SchemaRenderError("the broken example config was accepted: change example_error")


# Deployment settings -----------------------------------------------------------------------------


def render_settings() -> str:
    """The [mlops] options of settings.SETTINGS: option, variable, default, meaning."""

    def default(s: settings.Setting) -> str:
        if s.default:
            return f"`{s.default}`"
        return "see meaning" if "Default:" in s.description else "none"

    rows = [f"| `{s.key}` | `{s.env}` | {default(s)} | {md_text(s.description)} |" for s in settings.SETTINGS]
    return "\n".join(["| `[mlops]` option | Variable | Default | Meaning |", "|---|---|---|---|", *rows])


def render_stack_settings(text: str) -> str:
    """mlops.env as tables: one per `# --- title ---` section, one row per group of keys and its comment."""
    out: list[str] = []
    keys: list[tuple[str, str]] = []
    comment: list[str] = []
    started = False

    def flush() -> None:
        if keys:
            names = "<br>".join(f"`{k}`" for k, _ in keys)
            values = "<br>".join(f"`{v}`" if v else "(empty)" for _, v in keys)
            out.append(f"| {names} | {values} | {md_text(' '.join(comment))} |")
        keys.clear()
        comment.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# ---"):
            flush()
            started = True
            title = line.strip("#- ")
            out += ["", f"#### {title}", "", "| Setting | In mlops.env | Meaning |", "|---|---|---|"]
        elif not started:
            continue
        elif not line:
            flush()
        elif line.startswith("#"):
            if keys:
                flush()
            comment.append(line.lstrip("#").strip())
        else:
            keys.extend(parse_settings(line, STACK_SETTINGS.name).items())
    flush()
    return "\n".join(out).strip("\n")


# Expressions ------------------------------------------------------------------------------------

EXPRESSIONS = """\
## Expressions

`features.derived`, `features.label.expr` and `features.label.known` are expressions over the columns of
a row: the base source's declared columns, the joined columns (by their feature names) and the features
derived before. They are parsed when the file is loaded, into a tree of the allowed parts below; anything
else makes the file invalid, with the key and the offending part (`distance.__class__` gives
`attribute '__class__' is not allowed`). Nothing is run to parse them (Python's `ast` parser only reads
the text), and they are evaluated column by column with pandas.

%PARTS%

%FUNCTIONS%

Refused, among others: any other attribute or method (`x.values`, `x.__class__`, `x.apply(...)`), any other
call (`eval`, `open`, `__import__`), `@` variables, indexing `x[0]`, `lambda`, comprehensions, `if`-`else`
(use `where`), f-strings, `:=`, `is`, `in` (use `isin`), bit shifts, `None`, an expression that uses no
column, one longer than %MAX_CHARS% characters, with more than %MAX_NODES% parts or nested deeper than
%MAX_DEPTH% levels, and mixing kinds (`carrier + 1`, `distance.dt.hour`). `label.known` must give a
condition; `label.expr` what `train.task` learns: a condition (binary), a number (regression), a text or a
whole number (multiclass, e.g. `where(arr_delay > 60, 'late', where(arr_delay > 15, 'delayed', 'on_time'))`).

The demo's `plane_age: year - plane_year`, `day_of_week: time_hour.dt.dayofweek`,
`expr: arr_delay > 15` and `known: arr_delay.notna()` give the values `DataFrame.eval` gave before this
language replaced it. One difference: `DataFrame.eval` left some comparisons of nullable columns
(two string columns) with missing values; here every comparison gives true or false.
"""


EXPRESSION_PARTS: list[tuple[str, str, str]] = [
    ("column", "`distance`, `plane_year`", "a declared, joined or earlier derived column, by its name (an identifier)"),
    (
        "constant",
        "`15`, `2.5`, `'JFK'`, `\"JFK\"`, `True`, `False`",
        "integers within 64 bits; a date or time as text where a datetime column is compared:"
        " `time_hour >= '2013-06-01'` (in the column's time zone unless the text has one)",
    ),
    (
        "arithmetic",
        "`+ - * / // % **`, unary `-` and `+`",
        "on numbers (and true/false as 1/0); `+` also joins strings",
    ),
    (
        "comparison",
        "`== != < <= > >=`, chained `0 < hour <= 12`",
        "between two numbers, two strings or two datetimes; true or false, never missing: a comparison with a"
        " missing value is false (as with NaN)",
    ),
    (
        "condition",
        "`and`, `or`, `not`, `&`, `|`, `~`, `( )`",
        "on conditions; `&` and `|` bind like `and` and `or` (as in `DataFrame.eval`): `a > 1 & b < 2` is"
        " `(a > 1) and (b < 2)`",
    ),
    ("datetime field", "`time_hour.dt.<field>`", ", ".join(f"`{f}`" for f in expressions.DT_FIELDS)),
    ("function", "`name(x, ...)`", "the table below; those marked *method* may also be written `x.name(...)`"),
]


def render_expressions() -> str:
    """The expression language: grammar, the allowed functions and `.dt` fields, from the parser's tables."""
    parts = ["| Part | Written | Notes |", "|---|---|---|"]
    parts += [f"| {part} | {md_text(written)} | {md_text(notes)} |" for part, written, notes in EXPRESSION_PARTS]
    rows = ["| Function | Does | Example | Method |", "|---|---|---|---|"]
    for name, fn in expressions.FUNCTIONS.items():
        params = ", ".join(p if i < fn.required else f"[{p}]" for i, p in enumerate(fn.params))
        rows.append(f"| `{name}({params})` | {md_text(fn.doc)} | `{fn.example}` | {'yes' if fn.method else ''} |")
    return fill(
        EXPRESSIONS,
        PARTS="\n".join(parts),
        FUNCTIONS="\n".join(rows),
        MAX_CHARS=str(expressions.MAX_CHARS),
        MAX_NODES=str(expressions.MAX_NODES),
        MAX_DEPTH=str(expressions.MAX_DEPTH),
    )


# The page ----------------------------------------------------------------------------------------

HEADER = """\
<!-- Generated by scripts/gen_config_docs.py: do not edit. Change the models or the generator, then run
     %REGENERATE% (tests/scripts/test_gen_config_docs.py fails while this page is stale). -->

# Configuration

Two kinds of settings drive airflow-mlops:

- **one YAML file per pipeline**, `include/pipelines/<name>.yaml`, written by whoever owns the model: its
  sources, schedules, features and the rest of its lifecycle ([the pipeline file](#the-pipeline-file),
  [reference](#reference), [annotated example](#annotated-example));
- **the deployment's settings**, set once by whoever runs Airflow: the `[mlops]` section of Airflow's
  configuration (or `MLOPS_*` variables), three Airflow connections and, for the local stack, `mlops.env`
  ([deployment settings](#deployment-settings)).

The reference and the example below are generated from the schema itself (the pydantic models under
`plugins/airflow_mlops/`) and from `include/pipelines/flight_delays.yaml`, `mlops.env` and
`plugins/airflow_mlops/settings.py`, so they cannot drift from the code: a test fails until this page is
regenerated with `%REGENERATE%`. Which DAGs exist today is in [architecture.md](architecture.md).

## The pipeline file

- **One file, one pipeline.** `include/pipelines/<name>.yaml` (the folder is the `pipelines_dir` setting);
  `name` inside must equal the file name. A `.yml` file is reported as an error, not loaded.
- **Strict.** An unknown or misspelt key is an error, never ignored. A key repeated in one mapping is an
  error (YAML would keep the last). YAML 1.1 reads unquoted `on`, `off`, `yes` and `no` as booleans: such
  a key is refused with a hint to quote it.
- **Errors name the file, the line, the key path and the problem** (`file:line: key: message`), for
  every file at once. For example a sensor poke interval of `0` and `catchup` misspelt `catch_up` give:

  ```text
%ERROR%
  ```

- **Declarative.** Nothing in the file is run as code: expressions are a small language parsed when the
  file is loaded ([expressions](#expressions)); every other string that reaches code is checked against
  an allow-list or a pattern (below).
- **Read at parse time and at run time.** The dag-processor reads every pipeline file (and checks that
  the suite files it names exist) each time it parses `dags/mlops_pipelines.py` (and
  `dags/mlops_pipeline_errors.py`), and builds the DAGs from them; nothing else is read at parse time.
  Each task reads its pipeline's file again when it runs. So a change to the DAGs' shape or schedule
  (sources, `ingest.schedule`, ...) shows after the next parse, while what a task does with the config
  (columns, expressions, suites) follows the file as it is when the task runs.
- **One bad file breaks one pipeline.** An invalid file is left out: its pipeline's DAGs are
  deactivated until it is fixed, the other pipelines' DAGs keep updating, and Airflow shows the problems
  of every invalid file as the import error of `dags/mlops_pipeline_errors.py`. Problems across keys
  (below) are checked once every key has a valid type, so fixing one error may reveal the next.
- **Check a file before it ships** with `python -m airflow_mlops validate`
  ([below](#checking-a-file-before-it-ships)).

### Checks beyond the types

The reference gives each key's type and bounds; these rules across keys are checked too, when the file is
loaded:

- `sources.<name>.suite` must be a relative `.json` path without `..` that names a file inside the
  expectations folder (`include/expectations/`, or the `expectations_dir` setting); a symbolic link that
  leads out of the folder is refused too.
- `sources.<name>.path` must be relative, without `..`, and may hold no placeholder but `{ds}`. With
  `{ds}` (replaced by the logical date, `YYYY-MM-DD`) the source is *partitioned*: one file lands per
  logical date. Without it the source is a reference table: the same landing file is waited for, copied
  and validated on every logical date.
- `features.base` must name a partitioned source; `features.key`, `features.timestamp` and
  `features.keep` must be declared columns of it.
- `features.joins[].source` must name a source; its `keys` and the source side of its `columns` must be
  declared columns of that source, and the `keys` declared columns of the base source too.
- `features.derived`, `features.label.expr` and `features.label.known` must be valid
  [expressions](#expressions) over the base and joined columns (a derived feature may use the ones
  derived before it); `label.known` must give a condition and `label.expr` the label of `train.task`
  ([task types](#task-types)).
- `end_date`, when set, must not be before `start_date`.
- `ingest.schedule`, `train.schedule` and `monitor.schedule` must be a cron expression of 5 fields or one
  of Airflow's presets (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@quarterly`, `@yearly`).
- `monitor.alerts.webhook_conn_id` must be a valid Airflow connection id (letters, digits and
  `_#!()-.:/\\`, at most 250 characters); `monitor.alerts.email` must hold e-mail addresses.
%TRAIN_RULES%
Checked when the features are built (the `build_features` task fails naming the feature), not when
the file is loaded: a join whose source has two rows for one key is refused (joins are many-to-one); a
join column that already exists on the base rows must be renamed.

### Checking a file before it ships

`python -m airflow_mlops validate [FILE|FOLDER ...]` (default: the pipelines folder, `MLOPS_PIPELINES_DIR`)
checks everything that needs no data, lake or server: all of the above, and each source's suite, read from
the expectations folder (`MLOPS_EXPECTATIONS_DIR`):

- Great Expectations accepts it (every expectation type and its arguments), and it uses no suite parameter
  but the logical date's `year`, `month` and `day`;
- every column an expectation names is a declared column of the source, and a suite that lists the
  table's columns exactly lists every declared one;
- the declared type fits the expectation: a type expectation (`expect_column_values_to_be_in_type_list`,
  `expect_column_values_to_be_of_type`) names the dtype the column gets at ingest (`int64` or `Int64`,
  `float64`, `StringDtype`, `bool` or `boolean`, `Timestamp` or `datetime64[ns, UTC]`); regex and length
  expectations need `string` columns; mean, median, sum and numeric bounds need numbers.

Each problem is printed as `file:line: key: message` (a suite's problem on the key of the declared column
or of the suite), followed by a count on stderr and exit status 1; with none, one `OK` line and status 0.
`--no-gx` skips the Great Expectations check, which imports Great Expectations (several seconds).
`tests/airflow_mlops/test_cli.py` runs it on `include/pipelines`.

As a [pre-commit](https://pre-commit.com) hook (`.pre-commit-config.yaml` at the repository root):

```yaml
repos:
  - repo: local
    hooks:
      - id: airflow-mlops-validate
        name: validate pipeline files
        entry: .venv/bin/python -m airflow_mlops validate include/pipelines
        language: system
        files: ^include/(pipelines|expectations)/
        pass_filenames: false   # a changed suite can break any pipeline that names it
```

## Reference

Every key of the pipeline file. **required** keys must be present; any other key may be left out and
takes its default, and so may a whole section whose keys all have defaults (`ingest`, for example).
`<name>` in a path stands for a key you choose (a source name, for example).
"""

TRAIN_RULES = """\
- `train.window_days` must be at least `train.validation_days + train.holdout_days + 1` (one training
  day); `train.search` needs `train.validation_days` of at least 1; `train.gates.slice_columns` must be
  feature or key columns; a `train.search.params` distribution needs `low` below `high` (`loguniform`:
  `low` above 0; `randint`: whole bounds).
- `train.model.estimator` must be an import path such as `package.module.Class` in `sklearn` or in a
  package listed under `train.model.allowed_modules` (nothing else is ever imported), and when the
  model is built it must suit `train.task`: a scikit-learn classifier with `predict_proba` (binary,
  multiclass) or regressor (regression). `train.metric.primary` must be a metric of `train.task`.
  `train.model.trusted_types`
  must be type paths. Neither key may name anything in %DENIED%: their objects run commands, touch files
  or import code.
"""

TASK_TYPES = """\
### Task types

`train.task` says what the model learns; it changes the label, the metrics, the outputs and the plots.
`binary` is the default: a file without `train.task` trains as before.

%TABLE%

All tasks also plot the permutation importance, gate on the primary metric (its slice disparity too) and
monitor it on matured labels.
Lower is better for %LOWER%: `min_primary` is then a ceiling and `min_improvement` counts a decrease as a
gain. `roc_auc_ovr` is the mean one-vs-rest ROC AUC over the
classes present in the rows scored (undefined with one class); a multiclass label the model never saw counts
as a wrong prediction. `threshold` is used by binary only.
"""

EXAMPLE_INTRO = """\
## Annotated example

`include/pipelines/flight_delays.yaml`, the demo pipeline, with each key's description from the
schema added as a comment line above it (the file's own comments are kept):
"""

DEPLOYMENT = """\
## Deployment settings

### `[mlops]` settings

Read by the package in every Airflow component and task (`plugins/airflow_mlops/settings.py`), from the
`[mlops]` section of Airflow's configuration: `airflow.cfg`, or `AIRFLOW__MLOPS__<OPTION>` in the
environment (with Airflow's `_CMD` and `_SECRET` forms), like any Airflow option. Each option also has a
variable `MLOPS_<OPTION>`, which **wins over the section** when both are set. An empty value counts as
unset. `airflow config list` shows the section with these descriptions (the package declares it in its
provider info). The `python -m airflow_mlops` commands read it too; the model server, which does not load
Airflow, reads only the two environment variables, not `airflow.cfg`.

%SETTINGS%

The pipelines and expectations folders default to `include/` of the checkout when the package runs from
one (installed editable, as the local stack and the tests do); an installed wheel has no checkout, so
there they default to `$AIRFLOW_HOME/include/pipelines` and `$AIRFLOW_HOME/include/expectations`. A
pipelines folder that does not exist is an import error of the DAG file naming the folder and these
settings. Installing into your own Airflow: [install.md](install.md).

### Airflow connections

Define them like any Airflow connection: in the UI, with `airflow connections add`, from a secrets
backend, or as `AIRFLOW_CONN_<ID>` environment variables holding JSON (what the local stack does). The
package declares three connection types, each with its own form in Admin -> Connections and a working
Test button (Airflow shows the button only with `[core] test_connection = Enabled`). The hooks read the
fields below whatever the connection's type.

#### `%STORAGE_CONN%`: the lake

Read by `LakeHook` (every operator and sensor, the triggerer's wait, the report route of the API
server). Connection type `mlops_lake`; host, schema and port are unused.

| Field | Meaning |
|---|---|
| login | S3 access key id (or extra `aws_access_key_id`). Empty: boto3's default credential chain. |
| password | S3 secret access key (or extra `aws_secret_access_key`). |
| extra `lake_root` | The lake: a local folder or `s3://bucket/prefix`. Default: the `lake_root` setting. |
| extra `endpoint_url` | S3-compatible endpoint (MinIO, moto, ...). Empty: AWS S3. |
| extra `region_name` | S3 region. |
| extra `aws_session_token` | Temporary credentials. |
| extra `verify` | `false` to skip TLS verification, or the path of a CA bundle. |
| extra `config_kwargs` | botocore `Config` options, e.g. `{"s3": {"addressing_style": "path"}}`. |

The S3 fields are used only when the root starts with `s3://`. When the connection does not exist at
all, the lake is the `lake_root` setting alone (a local folder, or S3 with boto3's default credentials); a
connection id given explicitly (`lake_conn_id=`) must exist. An S3 lake on MinIO:

```bash
export AIRFLOW_CONN_MLOPS_STORAGE='{"conn_type": "mlops_lake", "login": "minio-access-key",
  "password": "minio-secret-key", "extra": {"lake_root": "s3://lake/prod",
  "endpoint_url": "http://minio:9000", "region_name": "us-east-1"}}'
```

The Test button (`LakeHook.test_connection()`) checks the lake without writing: a local folder is
readable and writable; on S3 the bucket exists and the prefix can be listed.

#### `%MLFLOW_CONN%`: the MLflow tracking server

Read by `MlflowHook` (`plugins/airflow_mlops/hooks.py`), for the training side of the lifecycle.
Connection type `mlops_mlflow`. The Test button asks `/health`, then the API (one experiment search)
with the credentials.

| Field | Meaning |
|---|---|
| host, port, schema | The tracking URI `schema://host:port` (`schema` is `http` or `https`). |
| login, password | Basic auth, sent with the requests to this server only. |
| extra `tracking_uri` | The full tracking URI; wins over host, port and schema. |
| extra `registry_uri` | Model registry URI when it differs from the tracking URI. |
| extra `ui_url` | Base URL of the MLflow UI for task links, when browsers reach it at another address. |
| extra `token` | Bearer token (instead of login and password), sent with the requests to this server only. |
| extra `insecure_tls` | `true` skips TLS checks (`MLFLOW_TRACKING_INSECURE_TLS`); not a boolean: an error. |

The credentials never go into the worker's environment: the hook keeps them in memory, bound to the
server's URL, and hands them to MLflow's HTTP layer per request through the package's MLflow request auth
provider (`MLFLOW_TRACKING_AUTH=airflow_mlops`, set by the hook; the name is not a secret). Another MLflow
server, and any child process, never receives them. Leave `MLFLOW_TRACKING_AUTH` unset (or set it to
`airflow_mlops`) on the workers.

```bash
export AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "mlops_mlflow", "host": "mlflow", "port": 5000, "schema": "http"}'
```

#### `%MODEL_SERVER_CONN%`: the model server

Read by `ModelServerHook` (the deploy DAG: reload, `/version`, smoke test). Connection type
`mlops_model_server`: host, port and schema (`http` or `https`) give the base URL, the password is the
server's API token (`MLOPS_MODEL_SERVER_TOKEN` of the server), the extra `admin_token` its admin token
(`MLOPS_MODEL_SERVER_ADMIN_TOKEN`), used only for `/admin/reload` after a promotion or a rollback;
without it the hook reads `/version` instead and the server picks the alias up by its own poll. Login is
unused. The Test button asks `/health`, then `/version` with the token. The server itself (tokens,
limits, metrics, inference log) is described in [serving.md](serving.md).

```bash
export AIRFLOW_CONN_MLOPS_MODEL_SERVER='{"conn_type": "mlops_model_server", "host": "model-server",
  "port": 8000, "password": "the-api-token", "extra": {"admin_token": "the-admin-token"}}'
```

### The local stack: `mlops.env`

Settings of `python -m airflow_mlops.stack` and `scripts/demo`, from `mlops.env` at the repository
root: `KEY=VALUE` lines, an environment variable of the same name wins over a line, and any
`AIRFLOW__SECTION__KEY` line goes to every Airflow process of the stack. The stack turns them into the
environment variables and connections above (`MLOPS_LAKE_ROOT`, `AIRFLOW_CONN_MLOPS_STORAGE`,
`AIRFLOW_CONN_MLFLOW_DEFAULT`, `AIRFLOW_CONN_MLOPS_MODEL_SERVER`). Scaling out is in [scaling.md](scaling.md).
"""


def fill(template: str, **values: str) -> str:
    """The template with each `%NAME%` replaced; every placeholder must be given."""
    for name, value in values.items():
        template = template.replace(f"%{name}%", value)
    left = re.findall(r"%[A-Z_]+%", template)
    if left:
        raise SchemaRenderError(f"placeholders without a value: {left}")
    return template


TASK_ROWS: list[tuple[str, str, str, str]] = [
    (
        "`features.label.expr` gives",
        "a condition (stored as nullable boolean)",
        "a text or a whole number (stored as `string` or `Int64`)",
        "a number (stored as `Float64`)",
    ),
    ("estimators", "classifiers with `predict_proba`", "classifiers with `predict_proba`", "regressors"),
    (
        "default estimator",
        "`HistGradientBoostingClassifier`",
        "`HistGradientBoostingClassifier`",
        "`HistGradientBoostingRegressor`",
    ),
    ("metrics (default primary first)", "%BINARY%", "%MULTICLASS%", "%REGRESSION%"),
    (
        "batch score columns (`predictions/`)",
        "`prediction`: probability of true",
        "`prediction`: most probable class; `proba.<class>`: each class's probability",
        "`prediction`: the value",
    ),
    (
        "model server answer, per row (`core.train.tasks.served_predictions`)",
        "the probability of true",
        '`{"prediction": class, "probabilities": {class: p}}`',
        "the value",
    ),
    (
        "prediction drift (`monitor.prediction_drift`)",
        "of `prediction`, the probability of true (numeric test)",
        "of `prediction`, the class mix (categorical test); each `proba.<class>` shown (numeric test)",
        "of `prediction`, the value (numeric test)",
    ),
    ("MLflow pyfunc output", "`predict_proba`, 2 columns", "`predict_proba`, one column per class", "`predict`"),
    (
        "evaluation plots",
        "ROC, precision-recall, calibration, confusion matrix at `threshold`",
        "confusion matrix of the most probable class",
        "residuals, predicted vs actual",
    ),
]
"""What differs by train.task, one row per aspect (binary, multiclass, regression)."""


def task_table() -> str:
    lines = ["| | binary | multiclass | regression |", "|---|---|---|---|"]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in TASK_ROWS)])


def _metric_list(task: str) -> str:
    """The task's metrics, its default primary metric first, as code."""
    names = sorted(TASK_METRICS[task], key=lambda m: m != DEFAULT_PRIMARY[task])
    return ", ".join(f"`{m}`" for m in names)


def render() -> str:
    """The whole page."""
    example = EXAMPLE.read_text(encoding="utf-8")
    error = "\n".join(f"  {line}" for line in example_error(example).splitlines())
    parts = [
        fill(
            HEADER,
            REGENERATE=REGENERATE,
            ERROR=error,
            TRAIN_RULES=fill(TRAIN_RULES, DENIED=", ".join(f"`{m}`" for m in sorted(DENIED_MODULES))),
        ),
        fill(
            TASK_TYPES.replace("%TABLE%", task_table()),
            **{task.upper(): _metric_list(task) for task in TASK_METRICS},
            LOWER=", ".join(f"`{m}`" for m in METRIC_NAMES if m in LOWER_IS_BETTER),
        ),
        render_expressions(),
        render_reference(),
        EXAMPLE_INTRO,
        f"```yaml\n{annotate_example(example)}```",
        fill(
            DEPLOYMENT,
            SETTINGS=render_settings(),
            STORAGE_CONN=settings.DEFAULT_STORAGE_CONN_ID,
            MLFLOW_CONN=settings.DEFAULT_MLFLOW_CONN_ID,
            MODEL_SERVER_CONN=settings.DEFAULT_MODEL_SERVER_CONN_ID,
        ),
        render_stack_settings(STACK_SETTINGS.read_text(encoding="utf-8")),
    ]
    return "\n\n".join(p.strip("\n") for p in parts) + "\n"


def stale_message(current: str | None, wanted: str) -> str | None:
    """None when the page is up to date, else what to do and the start of the difference."""
    if current == wanted:
        return None
    diff = difflib.unified_diff(
        (current or "").splitlines(), wanted.splitlines(), "docs/configuration.md", "generated", lineterm="", n=1
    )
    shown = "\n".join(list(diff)[:60])
    return (
        f"docs/configuration.md is out of date with the pipeline config schema: run {REGENERATE} "
        f"(with the project's .venv, e.g. .venv/bin/python scripts/gen_config_docs.py) and commit the result.\n"
        f"{shown}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if the page is stale")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        current = OUTPUT.read_text(encoding="utf-8") if OUTPUT.is_file() else None
        problem = stale_message(current, wanted)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date")
        return 0
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(wanted, encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    missing = undocumented_keys()
    if missing:
        print(f"keys without a description in the schema: {', '.join(missing)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
