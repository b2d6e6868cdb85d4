"""Content hashes of DataFrames that do not depend on the file format or the writer."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import pandas as pd


def frame_hash(df: pd.DataFrame) -> str:
    """sha256 of a frame's columns, dtypes and values (row order matters, the index does not)."""
    h = hashlib.sha256()
    for name, dtype in df.dtypes.items():
        h.update(f"{name}:{dtype};".encode())
    h.update(pd.util.hash_pandas_object(df, index=False).to_numpy().tobytes())
    return h.hexdigest()


def combine_hashes(hashes: Iterable[str]) -> str:
    """One hash over several content hashes, in the order given."""
    h = hashlib.sha256()
    for item in hashes:
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()
