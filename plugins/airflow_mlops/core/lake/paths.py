"""Where each artefact lives, relative to the lake root: the one place that knows the layout."""

from __future__ import annotations

import re


def partition(ds: str) -> str:
    """Folder name of the partition of one logical date (YYYY-MM-DD)."""
    return f"date={ds}"


def landing(pipeline: str, relative: str) -> str:
    """A landing file: `relative` is the source's path with `{ds}` filled in."""
    return f"landing/{pipeline}/{relative}"


def raw(pipeline: str, source: str, ds: str) -> str:
    return f"raw/{pipeline}/{source}/{partition(ds)}/{source}.parquet"


def raw_partition(pipeline: str, source: str, ds: str) -> str:
    return f"raw/{pipeline}/{source}/{partition(ds)}"


def features(pipeline: str, ds: str) -> str:
    return f"features/{pipeline}/{partition(ds)}/features.parquet"


def features_partition(pipeline: str, ds: str) -> str:
    return f"features/{pipeline}/{partition(ds)}"


def labels(pipeline: str, ds: str) -> str:
    """The labels that landed on `ds` (a label source of their own): key, time and label of earlier rows."""
    return f"labels/{pipeline}/{partition(ds)}/labels.parquet"


def labels_partition(pipeline: str, ds: str) -> str:
    return f"labels/{pipeline}/{partition(ds)}"


def features_root(pipeline: str) -> str:
    return f"features/{pipeline}"


def quarantine(pipeline: str, source: str, ds: str) -> str:
    return f"quarantine/{pipeline}/{source}/{partition(ds)}"


def validation_report(pipeline: str, source: str, ds: str) -> str:
    return f"reports/{pipeline}/validation/{source}/{partition(ds)}/report.html"


BROWSABLE_ZONES = ("reports", "quarantine")
"""Zones whose files the API server plugin serves to signed-in users (never data zones)."""

_SEGMENT = r"[^/.][^/]*"
_DATE = r"date=\d{4}-\d{2}-\d{2}"
REPORT_PATTERNS = (
    re.compile(rf"reports/{_SEGMENT}/validation/{_SEGMENT}/{_DATE}/report\.html"),  # validation_report()
    re.compile(rf"reports/{_SEGMENT}/monitor/{_DATE}/report\.html"),  # monitor_report()
)
"""The HTML reports this package writes; only these may be shown as pages (everything else in the lake may
hold what an upstream system delivered, e.g. a landing file copied into quarantine)."""


def is_report(path: str) -> bool:
    """Whether a lake path (relative to the root) is one of the HTML reports the package writes."""
    return any(pattern.fullmatch(path) for pattern in REPORT_PATTERNS)


def predictions(pipeline: str, ds: str) -> str:
    return f"predictions/{pipeline}/{partition(ds)}/predictions.parquet"


def inference_log_partition(pipeline: str, ds: str) -> str:
    """The model server's request log of one day (files named by the server, written in batches)."""
    return f"inference_log/{pipeline}/{partition(ds)}"


def monitor_report(pipeline: str, ds: str) -> str:
    return f"reports/{pipeline}/monitor/{partition(ds)}/report.html"


def step_record(pipeline: str, step: str, ds: str) -> str:
    """What a step's last successful run of `ds` recorded: its input fingerprint, result and outputs (the cache).

    A zone of its own, not a file in the output partition: readers list partitions and must not meet it there."""
    return f"steps/{pipeline}/{step}/{partition(ds)}.json"
