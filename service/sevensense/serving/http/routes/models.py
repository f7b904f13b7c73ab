"""The served models: what runs and with what traffic (``GET /models``, ``/models/{name}``,
``/quality``), and the admin's rollouts (activate, canary weights)."""

import os
from typing import Annotated

from fastapi import APIRouter, Depends

from sevensense.embeddings.quality import process_monitors
from sevensense.identity import ApiKeyRecord
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import Context, Parts
from sevensense.serving.schemas import (
    ActivateRequest,
    ModelDetail,
    ModelList,
    QualityAnswer,
    RolloutResponse,
    TrafficRequest,
)

router = APIRouter()


@router.get("/models", response_model=ModelList, summary="Models, versions and traffic split")
async def list_models(
    _: Annotated[ApiKeyRecord, Depends(authorised("read"))], ctx: Context
) -> ModelList:
    return ctx.admin.model_list()


@router.get("/models/{name}", response_model=ModelDetail, summary="One model with manifests")
async def get_model(
    name: str, _: Annotated[ApiKeyRecord, Depends(authorised("read"))], ctx: Context
) -> ModelDetail:
    return ctx.admin.model_detail(name)


@router.post(
    "/admin/models/{name}/activate",
    response_model=RolloutResponse,
    summary="Hot swap: verify, load and warm a version, then route all traffic to it",
)
async def activate(
    name: str,
    body: ActivateRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    ctx: Context,
) -> RolloutResponse:
    return await ctx.admin.activate(name, body.version, body.variant, key.id, force=body.force)


@router.put(
    "/admin/models/{name}/traffic",
    response_model=RolloutResponse,
    summary="Canary: set traffic weights between versions (each is verified and warmed)",
)
async def traffic(
    name: str,
    body: TrafficRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("admin"))],
    ctx: Context,
) -> RolloutResponse:
    return await ctx.admin.set_traffic(name, body.weights, body.variant, key.id, force=body.force)


@router.get(
    "/quality",
    response_model=QualityAnswer,
    summary="Embedding-quality monitor (ADR-007 §6.1) per model version, this process",
)
async def quality(
    _: Annotated[ApiKeyRecord, Depends(authorised("read"))], parts: Parts
) -> QualityAnswer:
    monitors = process_monitors(parts.settings.quality)
    return QualityAnswer(pid=os.getpid(), models=monitors.reports())
