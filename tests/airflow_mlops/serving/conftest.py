"""Fixtures of the serving tests: registered models (`setup`) and a model server over them (`server`)."""

from __future__ import annotations

from tests.fixtures.served_models import server, setup

__all__ = ["server", "setup"]
