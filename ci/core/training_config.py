"""Where the model trains: the project's own interpreter, or a container built from a
Dockerfile target (`[model] python`, `[model.container]`); pure config models.

Kept apart from config.py so `[model]` only references them (and config.py stays small).
"""

from __future__ import annotations

import posixpath
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from ci.core import platforms

OUTPUT_DIR_ENV = "MACI_OUTPUT_DIR"
CONTAINER_SRC = "/src"  # the training workdir, mounted read-only
CONTAINER_OUT = "/out"  # MACI_OUTPUT_DIR inside the container, mounted read-write


def _interpreter(value: str) -> str:
    """A path (relative to the project root, or absolute) or a bare command on PATH."""
    if not value or any(c.isspace() for c in value):
        raise ValueError("give one interpreter path or command name (no arguments)")
    return value


def _relative(value: str) -> str:
    norm = posixpath.normpath(value.replace("\\", "/"))
    if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise ValueError("must stay inside the project (a relative path without '..')")
    return norm


Interpreter = Annotated[str, AfterValidator(_interpreter)]


class TrainContainerConfig(BaseModel):
    """`[model.container]`: build `target` of the Dockerfile for one (native) platform and
    run `train_command` in it; the library logs what it writes to /out."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    target: str = Field(default="train", min_length=1, description="Dockerfile stage")
    dockerfile: str | None = Field(default=None, description="relative to the context; "
                                   "default build.dockerfile")
    context: str | None = Field(default=None, description="default build.context")
    platform: str | None = Field(default=None, description="default: the Docker daemon's "
                                 "own (native) platform")
    build_args: dict[str, str] = Field(default_factory=dict, description="on top of "
                                       "build.build_args and BASE")

    @field_validator("dockerfile", "context")
    @classmethod
    def _inside(cls, value: str | None) -> str | None:
        return None if value is None else _relative(value)

    @field_validator("platform")
    @classmethod
    def _platform(cls, value: str | None) -> str | None:
        return None if value is None else platforms.canonical(value)
