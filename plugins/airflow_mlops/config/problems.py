"""Config problems located by file, line and key, and the error that carries them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from airflow_mlops.errors import PermanentError

Loc = tuple[str | int, ...]


def fmt_loc(loc: Loc) -> str:
    """A key path as written in messages: `features.joins.0.source`."""
    return ".".join(str(p) for p in loc) or "(top level)"


@dataclass(frozen=True)
class Problem:
    """One problem of a config file: `file:line: key: message` (the line when it is known)."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}"


class PipelineConfigError(PermanentError, ValueError):
    """One or more pipeline configs are invalid; the message names each file, line, key and problem."""

    def __init__(self, problems: str | Sequence[Problem]) -> None:
        self.problems: list[Problem] = [] if isinstance(problems, str) else list(problems)
        super().__init__(problems if isinstance(problems, str) else "\n".join(str(p) for p in self.problems))


class KeyProblems(ValueError):
    """Problems found across fields, each at a key path; the model validator raises them together."""

    def __init__(self, problems: Sequence[tuple[Loc, str]]) -> None:
        super().__init__("; ".join(f"{fmt_loc(loc)}: {msg}" for loc, msg in problems))
        self.problems = list(problems)
