"""``GET /status``: this gateway worker's model paths, rollouts and limits, for operators
(``/readyz`` answers load balancers)."""

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from sevensense.identity import ApiKeyRecord
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import Context, Parts

router = APIRouter()


@router.get("/status", summary="Model paths, rollouts and limits of this gateway worker")
async def status(
    _: Annotated[ApiKeyRecord, Depends(authorised("read"))], ctx: Context, parts: Parts
) -> dict[str, Any]:
    gateway = ctx.gateway
    serving = parts.settings.serving
    await gateway.router.refresh()
    return {
        "ready": await ctx.ready(),
        "paths": gateway.describe(),
        "default_model": gateway.resolver.default_model(),
        "inflight": parts.inflight.count,
        "limits": {
            "max_upload_mb": serving.max_upload_mb,
            "max_audio_s": serving.max_audio_s,
            "max_inflight_requests": serving.max_inflight_requests,
            "rate_limit_per_s": serving.rate_limit_per_s,
        },
    }
