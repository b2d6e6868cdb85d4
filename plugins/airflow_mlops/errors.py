"""Errors shared by the layers: those a retry cannot fix fail an Airflow task at once."""

from __future__ import annotations


class PermanentError(Exception):
    """An error a retry cannot fix (a bad config, expression, feature definition or model type).

    The operators turn it into AirflowFailException, so the task fails at once instead of spending its
    retries; everything else (an unreachable lake or server) keeps the retries.
    """
