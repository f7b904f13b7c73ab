"""Hot swap and canary weights: verify, load and warm first, switch traffic last.

The switch is one write to the rollout store, which every gateway worker re-reads before
routing; a request resolves its version once, at its start, and sends that exact version
with every window, so requests in flight finish where they began. Model services keep the
previous version loaded (``max_loaded_versions``), so nothing in flight loses its session.
Any failure before the write leaves the old version serving and is returned as the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import anyio

from sevensense.artifacts.registry import Artifact, ModelRef
from sevensense.errors import ModelNotFoundError, NoModelPathError, SevensenseError
from sevensense.serving.gateway import Gateway
from sevensense.serving.metrics import metrics
from sevensense.serving.paths import ModelPath
from sevensense.serving.rollout import RolloutState, sorted_versions
from sevensense.serving.wire import (
    ModelDetail,
    ModelInfo,
    ModelList,
    PrepareResult,
    RolloutResponse,
    VersionInfo,
)


class ActivationError(SevensenseError):
    """A version that could not be verified or warmed; the old one keeps serving."""

    code = "activation_failed"
    http_status = 409


def _info(gateway: Gateway, name: str, artifacts: list[Artifact]) -> ModelInfo:
    state = gateway.store.load().get(name)
    default = gateway.resolve(name, "") if state is None else None
    traffic = state.shares() if state else {default.manifest.version: 100.0} if default else {}
    variant = state.variant if state else gateway.settings.inference.model_variant
    versions: dict[str, list[Artifact]] = {}
    for a in artifacts:
        versions.setdefault(a.manifest.version, []).append(a)
    return ModelInfo(
        name=name,
        default=name == gateway.default_model(),
        active_version=state.active if state else (default.manifest.version if default else None),
        traffic=traffic,
        variant=variant,
        versions=[
            VersionInfo(
                version=v,
                variants=sorted(a.manifest.variant for a in versions[v]),
                test_artifact=any(a.manifest.test_artifact for a in versions[v]),
                weight=traffic.get(v, 0.0),
                active=traffic.get(v, 0.0) > 0,
            )
            for v in sorted_versions(versions)
        ],
    )


def _by_name(gateway: Gateway) -> dict[str, list[Artifact]]:
    found: dict[str, list[Artifact]] = {}
    for a in gateway.artifacts(max_age_s=0.0):
        if a.present:
            found.setdefault(a.manifest.name, []).append(a)
    return found


def model_list(gateway: Gateway) -> ModelList:
    return ModelList(
        default_model=gateway.default_model(),
        models=[_info(gateway, name, arts) for name, arts in sorted(_by_name(gateway).items())],
    )


def model_detail(gateway: Gateway, name: str) -> ModelDetail:
    artifacts = _by_name(gateway).get(name)
    if not artifacts:
        raise ModelNotFoundError(f"no servable model named {name!r}", model=name)
    info = _info(gateway, name, artifacts)
    return ModelDetail(
        **info.model_dump(),
        manifests={str(a.manifest.identity): a.manifest.model_dump(mode="json") for a in artifacts},
    )


async def _prepare_everywhere(
    gateway: Gateway, artifacts: list[Artifact]
) -> dict[str, list[PrepareResult]]:
    """Verify digests afresh (no cache) here, then have every ready path load and warm."""

    def verify(artifact: Artifact) -> None:
        gateway.registry.verify(artifact, use_cache=False)

    for artifact in artifacts:
        try:
            await anyio.to_thread.run_sync(verify, artifact)
        except SevensenseError as exc:
            metrics().model_loads.labels("gateway", *artifact.key[:2], "rejected").inc()
            raise ActivationError(
                f"{artifact.manifest.identity} refused, the current version keeps serving: "
                f"{exc.message}",
                cause=exc.code,
            ) from exc
    await gateway.router.refresh(force=True)
    ready: list[ModelPath] = [p for p in gateway.router.paths if p.status and p.status.ready]
    if not ready:
        raise NoModelPathError("no model path is ready to load the new version")
    prepared: dict[str, list[PrepareResult]] = {}
    for path in ready:
        refs = [str(a.manifest.identity) for a in artifacts]
        try:
            results = list(await asyncio.gather(*(path.prepare(r) for r in refs)))
        except Exception as exc:
            raise ActivationError(
                f"{path.name} model service did not answer while loading {', '.join(refs)}; "
                f"the current version keeps serving: {exc}"
            ) from exc
        for result in results:
            if result.error:
                raise ActivationError(
                    f"{path.name} model service could not load {result.ref}; the current "
                    f"version keeps serving: {result.error}",
                    cause=result.error_code,
                )
        prepared[path.name] = results
    return prepared


def _resolve_all(gateway: Gateway, name: str, versions: list[str], variant: str) -> list[Artifact]:
    out = []
    for version in versions:
        out.append(gateway.registry.resolve(ModelRef(name, version, variant)))
    return out


async def set_traffic(
    gateway: Gateway,
    name: str,
    weights: Mapping[str, float],
    variant: str | None,
    by: str,
) -> RolloutResponse:
    variant = variant or gateway.settings.inference.model_variant
    checked = RolloutState(weights=dict(weights), variant=variant)  # validates the weights
    live = [v for v, w in checked.weights.items() if w > 0]
    artifacts = _resolve_all(gateway, name, live, variant)
    prepared = await _prepare_everywhere(gateway, artifacts)
    state = gateway.store.set_weights(name, checked.weights, variant, by)
    _publish(name, state)
    return RolloutResponse(model=name, variant=variant, traffic=state.shares(), prepared=prepared)


async def activate(
    gateway: Gateway, name: str, version: str, variant: str | None, by: str
) -> RolloutResponse:
    variant = variant or gateway.settings.inference.model_variant
    artifacts = _resolve_all(gateway, name, [version], variant)
    prepared = await _prepare_everywhere(gateway, artifacts)
    state = gateway.store.activate(name, version, variant, by)
    _publish(name, state)
    return RolloutResponse(model=name, variant=variant, traffic=state.shares(), prepared=prepared)


def _publish(name: str, state: RolloutState) -> None:
    gauge = metrics().traffic_weight
    for version, share in state.shares().items():
        gauge.labels(name, version).set(share)
