"""A check result kept beside its artifact, keyed by the artifact's SHA-256 and the checklist
version: the gate re-runs the checklist only when either changes, and ``GET /models/{name}``
shows what was found. Admin overrides of a failed gate are recorded in the same file."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from sevensense.artifacts.registry import Artifact
from sevensense.inference.engine import EmbeddingEngine
from sevensense.quality_gate.checklist import CHECKLIST_VERSION, CheckResult, run_check
from sevensense.storage.atomic import atomic_write, exclusive_lock

log = logging.getLogger(__name__)

RESULT_FILE = "appendix_b.json"


class Override(BaseModel):
    """An admin let a version take traffic although its check failed."""

    by: str = Field(description="the admin key's id")
    at: datetime
    action: str = Field(description="activate or traffic")
    failed: list[str]


class StoredCheck(BaseModel):
    result: CheckResult
    overrides: list[Override] = Field(default_factory=list)


def result_path(artifact: Artifact) -> Path:
    return artifact.directory / RESULT_FILE


def load_stored(artifact: Artifact) -> StoredCheck | None:
    """The stored result when it is for these exact weights and this checklist."""
    path = result_path(artifact)
    try:
        stored = StoredCheck.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        log.warning("ignoring unreadable check result %s: %s", path, exc)
        return None
    result = stored.result
    if result.sha256 != artifact.manifest.sha256 or result.checklist_version != CHECKLIST_VERSION:
        return None
    return stored


def _save(artifact: Artifact, stored: StoredCheck) -> None:
    body = json.dumps(stored.model_dump(mode="json"), indent=2).encode()
    try:
        atomic_write(result_path(artifact), body, mode=0o644)
    except OSError as exc:  # a read-only model directory: the result still gates, unstored
        log.warning("check result for %s not stored: %s", artifact.manifest.identity, exc)


def checked(engine: EmbeddingEngine, artifact: Artifact, *, rerun: bool = False) -> StoredCheck:
    """The stored result, else a fresh run on the default reference set (stored). One run
    per artifact at a time: a second caller waits for the first and reads its result."""
    stored = None if rerun else load_stored(artifact)
    if stored is not None:
        return stored
    try:
        with exclusive_lock(result_path(artifact)):
            stored = None if rerun else load_stored(artifact)
            if stored is None:
                stored = StoredCheck(result=run_check(engine, str(artifact.manifest.identity)))
                _save(artifact, stored)
    except OSError:  # no lock file possible (read-only directory): run unlocked
        stored = StoredCheck(result=run_check(engine, str(artifact.manifest.identity)))
    return stored


def record_override(artifact: Artifact, by: str, action: str, failed: list[str]) -> Override:
    override = Override(by=by, at=datetime.now(UTC), action=action, failed=failed)
    with exclusive_lock(result_path(artifact)):
        stored = load_stored(artifact)
        if stored is not None:
            stored.overrides.append(override)
            _save(artifact, stored)
    log.warning(
        "quality gate overridden for %s by %s (%s): failed %s",
        artifact.manifest.identity,
        by,
        action,
        ", ".join(failed),
    )
    return override
