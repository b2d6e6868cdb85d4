"""Tests of the day ranges the stack's backfills cover."""

from __future__ import annotations

from datetime import date

import pytest

from airflow_mlops.stack.runs import day_range
from airflow_mlops.stack.settings import StackError


def test_day_range_includes_both_ends_and_refuses_a_reversed_range() -> None:
    assert day_range(date(2013, 1, 30), date(2013, 2, 1)) == [date(2013, 1, 30), date(2013, 1, 31), date(2013, 2, 1)]
    with pytest.raises(StackError, match="ends"):
        day_range(date(2013, 1, 2), date(2013, 1, 1))
