"""The one base for the library's data: frozen, strict pydantic models.

Every result, record and decision that crosses a stage or process boundary is one of these,
so nothing downstream can change what an earlier stage decided.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Frozen(BaseModel):
    """Immutable, unknown fields refused: what a stage produced stays what it produced."""

    model_config = ConfigDict(frozen=True, extra="forbid")
