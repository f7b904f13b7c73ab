"""The rollout gate: a version takes traffic only with a passing Appendix B check.

Activating a version, or giving it canary weight above zero, asks :func:`gate` first; a
failed (or unmeasurable) item refuses the change with ``quality_gate_failed``, listing the
items, before anything is written, so the current state keeps serving. ``force`` lets an
admin through anyway and records who and when beside the artifact.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from sevensense.artifacts.registry import Artifact
from sevensense.errors import QualityGateError
from sevensense.inference.engine import EmbeddingEngine
from sevensense.quality_gate.store import checked, record_override


class GateOutcome(BaseModel):
    model: str
    passed: bool
    checked_at: datetime
    failed: list[str] = Field(default_factory=list)
    forced: bool = False
    forced_by: str | None = None
    forced_at: datetime | None = None


def gate(
    engine: EmbeddingEngine, artifact: Artifact, *, force: bool, by: str, action: str
) -> GateOutcome:
    """Raises QualityGateError unless the artifact's check passes or ``force`` is set."""
    stored = checked(engine, artifact)
    result = stored.result
    failed = result.failed()
    outcome = GateOutcome(
        model=result.model, passed=not failed, checked_at=result.checked_at, failed=failed
    )
    if not failed:
        return outcome
    if not force:
        items = [i for i in result.items if i.id in failed]
        raise QualityGateError(
            f"{result.model} failed the ADR-007 Appendix B checklist ("
            + ", ".join(f"{i.id}: {i.status}" for i in items)
            + "); the current state keeps serving. An admin may override with force: true.",
            model=result.model,
            failed=[i.model_dump(mode="json") for i in items],
        )
    override = record_override(artifact, by, action, failed)
    return outcome.model_copy(
        update={"forced": True, "forced_by": override.by, "forced_at": override.at}
    )
