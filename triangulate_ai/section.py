"""The base of every config section, and of each balancing method's options (which live next to
their class, below the config that gathers them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Section(BaseModel):
    """Strict: no unknown keys, no silent type coercion (a string is never a number), and no
    infinite or NaN numbers (no setting of this project means anything at infinity)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
