"""Base of the pipeline config models: strict (unknown keys are errors) and frozen."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=60)]


class Strict(BaseModel):
    # forbid: a misspelt or unsupported key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)
