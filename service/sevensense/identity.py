"""Who a caller is: an API key's stored record and the scopes it grants.

Below the settings because the settings list key records, and apart from them because the
HTTP service, the stream socket and the tenant index all reason about callers, not config.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["embed", "read", "admin"]

PARTNER_SCOPES: tuple[Scope, ...] = ("embed", "read")


class ApiKeyRecord(BaseModel):
    """A partner or admin key as stored: never the key itself, only its SHA-256."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scopes: list[Scope] = Field(default_factory=lambda: list(PARTNER_SCOPES))
    rate_limit_per_s: float | None = Field(None, gt=0.0, description="overrides the default")
