"""``/annotations`` and ``/classifiers``: labels on the tenant's indexed windows, linear
classifiers trained on them, and the windows to review next (issue 26). Scope ``embed``
to write, ``read`` to list; tenancy as for the index (a partner key sees its own windows,
an admin key everyone's). Training runs in a worker thread and answers when done (a
linear head over at most ``max_weak_negatives`` windows trains in about a second), or, on
a space of more than ``index.classifier_job_windows`` windows, as a job through the
deferred queue and the worker (202); applying a classifier over a space is always a job."""

from typing import Annotated, Literal
from urllib.parse import urlencode

import anyio
import numpy as np
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from sevensense.agile.snippets import audio_path, png_bytes, read_span, spectrogram, wav_bytes
from sevensense.agile.store import ClassifierStore
from sevensense.agile.train import check_label_set, label_data
from sevensense.agile.workflow import (
    MAX_HISTOGRAM_BINS,
    MAX_HISTOGRAM_SAMPLE,
    histogram,
    review,
    train_classifier,
)
from sevensense.errors import QueueError, WindowNotFoundError
from sevensense.identity import ApiKeyRecord
from sevensense.index.annotations import MAX_WINDOW_ID, annotation_store
from sevensense.index.records import SpaceInfo
from sevensense.index.spaces import pick_space
from sevensense.jobs.records import AgileJob, ApplyTask, TrainTask, new_job_id, now
from sevensense.serving.http.auth import authorised
from sevensense.serving.http.context import ApiContext, Context, Parts, request_id
from sevensense.serving.http.routes.answers import queued_response
from sevensense.serving.schemas import (
    AnnotationsRequest,
    AnnotationsResponse,
    ClassifierApplyRequest,
    ClassifierListResponse,
    ClassifierResponse,
    ClassifierTrainRequest,
    DeferredResponse,
    HistogramResponse,
    ReviewResponse,
)
from sevensense.serving.tenant_index import key_scope

router = APIRouter()


@router.post(
    "/annotations",
    response_model=AnnotationsResponse,
    summary="Label indexed windows",
    description=(
        "JSON: the space (`index`, `model=name:version`, `transform`) and `annotations`, each "
        "a `window_id` or a `recording_id` with `start_s`/`end_s` (every window it covers), "
        "with `label`, `type` (positive, negative, uncertain) and `provenance`. Idempotent: "
        "the same label again changes nothing; another type replaces the type. A window of "
        "another tenant is 404."
    ),
)
async def post_annotations(
    request: Request,
    body: AnnotationsRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
    parts: Parts,
) -> AnnotationsResponse:
    def work() -> AnnotationsResponse:
        index = parts.similarity.index(body.index)
        space = pick_space(index, body.model, body.transform)
        result = annotation_store(index).annotate(space.key, body.annotations, key_scope(key))
        return AnnotationsResponse(
            index=index.name,
            space=space.key.slug,
            added=result.added,
            updated=result.updated,
            unchanged=result.unchanged,
            annotations=result.annotations,
            request_id=request_id(request),
        )

    return await anyio.to_thread.run_sync(work)


@router.get(
    "/annotations",
    response_model=AnnotationsResponse,
    summary="The tenant's labels in a space",
)
async def get_annotations(
    request: Request,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    parts: Parts,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
    label: str | None = None,
) -> AnnotationsResponse:
    def work() -> AnnotationsResponse:
        opened = parts.similarity.index(index)
        space = pick_space(opened, model, transform)
        found = annotation_store(opened).annotations(space.key, key_scope(key), label)
        return AnnotationsResponse(
            index=opened.name,
            space=space.key.slug,
            annotations=found,
            request_id=request_id(request),
        )

    return await anyio.to_thread.run_sync(work)


@router.delete(
    "/annotations",
    response_model=AnnotationsResponse,
    summary="Delete labels (by annotation id, or every one of a label)",
)
async def delete_annotations(
    request: Request,
    key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
    parts: Parts,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
    label: str | None = None,
    id: Annotated[list[Annotated[int, Field(ge=0, le=MAX_WINDOW_ID)]] | None, Query()] = None,
) -> AnnotationsResponse:
    def work() -> AnnotationsResponse:
        opened = parts.similarity.index(index)
        space = pick_space(opened, model, transform)
        if not id and label is None:
            from sevensense.errors import RequestError

            raise RequestError("name annotations by id=… or label=…")
        gone = annotation_store(opened).delete(space.key, key_scope(key), id or None, label)
        return AnnotationsResponse(
            index=opened.name, space=space.key.slug, deleted=gone, request_id=request_id(request)
        )

    return await anyio.to_thread.run_sync(work)


@router.post(
    "/classifiers",
    response_model=ClassifierResponse,
    responses={202: {"model": DeferredResponse, "description": "queued as a job"}},
    summary="Train a linear classifier on the tenant's labels",
    description=(
        "JSON: the space, `name`, optional `labels` and `options`. Answers when trained, with "
        "the registered version, held-out ROC-AUC and AP per class and the counts used; on a "
        "space of more than `index.classifier_job_windows` windows, 202 with a job id "
        "(`GET /jobs/{id}`: progress, then the same answer). 422: a class with too few "
        "positives (named, with its count), or one class and no negatives."
    ),
)
async def post_classifier(
    request: Request,
    body: ClassifierTrainRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("embed"))],
    ctx: Context,
    parts: Parts,
) -> ClassifierResponse | Response:
    def work() -> ClassifierResponse | Response:
        index = parts.similarity.index(body.index)
        space = pick_space(index, body.model, body.transform)
        windows = sum(s.entries for s in index.stats() if s.space.key == space.key)
        limit = parts.settings.index.classifier_job_windows
        if windows > limit:
            # the label set is checked now, so a refusal is the caller's 422, not a job's
            data = label_data(
                [
                    a
                    for a in annotation_store(index).annotations(space.key, key_scope(key))
                    if not body.labels or a.label in body.labels
                ],
                body.labels,
            )
            check_label_set(data, body.options.min_positives)
            task = TrainTask(name=body.name, labels=body.labels, options=body.options)
            reason = f"{windows} windows in the space (over {limit}): trained as a job"
            return _queue(ctx, key, index.name, space, reason, train=task)
        store = ClassifierStore(parts.settings.models_dir)
        trained = train_classifier(
            index, space, key_scope(key), store, body.name, body.labels, body.options
        )
        return ClassifierResponse(
            classifier=trained.ref, manifest=trained.manifest, request_id=request_id(request)
        )

    return await anyio.to_thread.run_sync(work)


@router.post(
    "/classifiers/{ref}/apply",
    status_code=202,
    response_model=DeferredResponse,
    summary="Run a classifier over the tenant's windows of a space, as a job writing files",
    description=(
        "JSON: the space, `formats` (`scores`: scores.parquet, one row per window; "
        "`raven`, `audacity`, `csv`, `kaleidoscope`, `parquet`: BirdNET-Analyzer files of "
        "the classes at or over `min_conf`), optional `density` (csv, parquet). Always a "
        "job (202): `GET /jobs/{id}` reports progress, then the summary and the files, each "
        "at `GET /jobs/{id}/files/{name}`. 404 unknown classifier, 409 another space."
    ),
)
async def apply_classifier_job(
    ref: str,
    body: ClassifierApplyRequest,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    ctx: Context,
    parts: Parts,
) -> Response:
    def work() -> Response:
        scope = key_scope(key)
        classifier = ClassifierStore(parts.settings.models_dir).resolve(ref, scope.tenant)
        index = parts.similarity.index(body.index)
        space = pick_space(index, body.model, body.transform)
        classifier.check_space(space.key)
        task = ApplyTask(
            classifier=classifier.ref,
            formats=body.formats,
            min_conf=body.min_conf,
            density=body.density,
        )
        reason = f"classifier {classifier.ref} over the space {space.key.slug}"
        return _queue(ctx, key, index.name, space, reason, apply=task)

    return await anyio.to_thread.run_sync(work)


def _queue(
    ctx: ApiContext,
    key: ApiKeyRecord,
    index: str,
    space: SpaceInfo,
    reason: str,
    *,
    train: TrainTask | None = None,
    apply: ApplyTask | None = None,
) -> Response:
    if ctx.queue is None:
        raise QueueError(f"no job queue configured; {reason}")
    job = AgileJob(
        job_id=new_job_id(),
        index=index,
        space=space.key,
        tenant=key_scope(key).tenant,
        train=train,
        apply=apply,
        submitted_at=now(),
    )
    model = f"{space.key.model_name}:{space.key.model_version}"
    record = ctx.queue.submit_agile(job, owner=key.id, model=model, reason=reason)
    return queued_response(record, reason)


@router.get(
    "/classifiers", response_model=ClassifierListResponse, summary="The classifiers a key may use"
)
async def list_classifiers(
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))], parts: Parts
) -> ClassifierListResponse:
    store = ClassifierStore(parts.settings.models_dir)
    found = await anyio.to_thread.run_sync(store.manifests, key_scope(key).tenant)
    return ClassifierListResponse(classifiers=found)


@router.get(
    "/classifiers/{ref}/review",
    response_model=ReviewResponse,
    summary="Windows to label next: top scores or nearest the decision boundary",
)
async def review_classifier(
    request: Request,
    ref: str,
    label: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    parts: Parts,
    mode: Literal["top", "margin"] = "top",
    k: Annotated[int, Query(ge=1, le=1000)] = 20,
    exclude_labelled: bool = True,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
) -> ReviewResponse:
    def work() -> ReviewResponse:
        scope = key_scope(key)
        classifier = ClassifierStore(parts.settings.models_dir).resolve(ref, scope.tenant)
        opened = parts.similarity.index(index)
        space = pick_space(opened, model, transform)
        rows = review(opened, space, scope, classifier, label, mode, k, exclude_labelled)
        query = {"index": opened.name, "model": f"{space.key.model_name}:{space.key.model_version}"}
        if space.key.transform != "full":
            query["transform"] = space.key.transform
        tail = urlencode(query)
        for row in rows:
            base = f"/windows/{row.window_id}"
            row.links = {
                "audio": f"{base}/audio?{tail}",
                "spectrogram": f"{base}/spectrogram.png?{tail}",
            }
        return ReviewResponse(
            classifier=classifier.ref,
            space=space.key.slug,
            label=label,
            mode=mode,
            windows=rows,
            request_id=request_id(request),
        )

    return await anyio.to_thread.run_sync(work)


@router.get(
    "/classifiers/{ref}/histogram",
    response_model=HistogramResponse,
    summary="A class's score histogram over a seeded random sample of the tenant's windows",
)
async def classifier_histogram(
    request: Request,
    ref: str,
    label: str,
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    parts: Parts,
    bins: Annotated[int, Query(ge=1, le=MAX_HISTOGRAM_BINS)] = 20,
    sample: Annotated[int, Query(ge=1, le=MAX_HISTOGRAM_SAMPLE)] = 10_000,
    seed: int = 0,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
) -> HistogramResponse:
    def work() -> HistogramResponse:
        scope = key_scope(key)
        classifier = ClassifierStore(parts.settings.models_dir).resolve(ref, scope.tenant)
        opened = parts.similarity.index(index)
        space = pick_space(opened, model, transform)
        found = histogram(opened, space, scope, classifier, label, bins, sample, seed)
        return HistogramResponse(
            classifier=classifier.ref,
            space=space.key.slug,
            request_id=request_id(request),
            **found.model_dump(),
        )

    return await anyio.to_thread.run_sync(work)


def _window_snippet(
    parts: Parts,
    key: ApiKeyRecord,
    window_id: int,
    index: str | None,
    model: str | None,
    transform: str | None,
) -> tuple[np.ndarray, int]:
    opened = parts.similarity.index(index)
    space = pick_space(opened, model, transform)
    found = annotation_store(opened).windows(space.key, key_scope(key), [window_id])
    if not found:
        raise WindowNotFoundError(
            f"no window {window_id} in this space for this key", window_id=window_id
        )
    window = found[0]
    path = audio_path(window, parts.settings.index.audio_roots)
    return read_span(path, window.start_s, window.end_s)


@router.get(
    "/windows/{window_id}/audio",
    response_class=Response,
    responses={200: {"content": {"audio/wav": {}}}},
    summary="A window's audio (WAV), when its recording is on this host",
)
async def window_audio(
    window_id: Annotated[int, Path(ge=0, le=MAX_WINDOW_ID)],
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    parts: Parts,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
) -> Response:
    samples, rate = await anyio.to_thread.run_sync(
        _window_snippet, parts, key, window_id, index, model, transform
    )
    body = await anyio.to_thread.run_sync(wav_bytes, samples, rate)
    return Response(body, media_type="audio/wav")


@router.get(
    "/windows/{window_id}/spectrogram.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
    summary="A window's spectrogram (PNG), when its recording is on this host",
)
async def window_spectrogram(
    window_id: Annotated[int, Path(ge=0, le=MAX_WINDOW_ID)],
    key: Annotated[ApiKeyRecord, Depends(authorised("read"))],
    parts: Parts,
    index: str | None = None,
    model: str | None = None,
    transform: str | None = None,
) -> Response:
    samples, _ = await anyio.to_thread.run_sync(
        _window_snippet, parts, key, window_id, index, model, transform
    )
    body = await anyio.to_thread.run_sync(lambda: png_bytes(spectrogram(samples)))
    return Response(body, media_type="image/png")
