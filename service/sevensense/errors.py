"""Typed errors shared by the engine, CLI, worker and service.

Every error carries a stable machine-readable ``code`` and the HTTP status the service maps
it to, so the outer layers never have to parse messages to decide what went wrong.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SevensenseError(Exception):
    """Base of every error the platform raises on purpose."""

    code: ClassVar[str] = "internal_error"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(SevensenseError):
    code = "invalid_config"
    http_status = 400


# --- audio -------------------------------------------------------------------------------


class AudioError(SevensenseError):
    code = "invalid_audio"
    http_status = 422


class EmptyAudioError(AudioError):
    code = "empty_audio"


class CorruptAudioError(AudioError):
    """The bytes claim to be audio but cannot be decoded (truncated, damaged, not audio)."""

    code = "undecodable_audio"


class UnsupportedAudioError(AudioError):
    code = "unsupported_audio_format"
    http_status = 415


class InvalidSamplesError(AudioError):
    """Decoded samples that no model should see (NaN or infinite values)."""

    code = "invalid_samples"


class AudioTooLongError(AudioError):
    code = "audio_too_long"
    http_status = 413


class SampleRateError(AudioError):
    """A sample rate outside the work bounds (``audio/bounds.py``): too low to hold sound
    the models use, or so far from the model's rate that resampling would multiply the work
    a few bytes declare."""

    code = "unsupported_sample_rate"


# --- models and artifacts ----------------------------------------------------------------


class ModelError(SevensenseError):
    code = "model_error"
    http_status = 500


class ModelNotFoundError(ModelError):
    code = "model_not_found"
    http_status = 404


class ManifestError(ModelError):
    code = "invalid_manifest"


class ArtifactMissingError(ModelError):
    """A manifest exists but its weights do not (e.g. Perch 2.0 before `models pull`)."""

    code = "artifact_missing"
    http_status = 503


class ChecksumMismatchError(ModelError):
    code = "checksum_mismatch"
    http_status = 409


class ContractMismatchError(ModelError):
    """The ONNX graph does not have the inputs/outputs its manifest promises."""

    code = "contract_mismatch"
    http_status = 409


class DownloadError(ModelError):
    code = "download_failed"
    http_status = 502


class ReducerNotFoundError(ModelError):
    """No PCA reducer artifact of that name (or version) under ``models/reducers``."""

    code = "reducer_not_found"
    http_status = 404


class ReducerMismatchError(ModelError):
    """A reducer fitted on another model's embeddings (name, version or SHA-256), or on
    vectors of another width: its axes would mean nothing for these, so it is refused.
    409, like a checksum or contract mismatch: the request is valid, the artifacts disagree."""

    code = "reducer_mismatch"
    http_status = 409


# --- inference ---------------------------------------------------------------------------


class InferenceError(SevensenseError):
    code = "inference_failed"
    http_status = 500


class SpeciesFilterError(SevensenseError):
    """A location, week, threshold or species list that cannot filter species as given."""

    code = "invalid_species_filter"
    http_status = 422


# --- serving -----------------------------------------------------------------------------


class RequestError(SevensenseError):
    """A request the service understood but will not act on as sent (bad options, keys)."""

    code = "invalid_request"
    http_status = 422


class PayloadTooLargeError(SevensenseError):
    code = "payload_too_large"
    http_status = 413


class UploadTooSlowError(SevensenseError):
    """The body arrived slower than the front door's minimum pace; the upload was cut."""

    code = "upload_too_slow"
    http_status = 408


class OverloadedError(SevensenseError):
    """Every path is saturated; the client should retry after ``retry_after_s``."""

    code = "overloaded"
    http_status = 503

    def __init__(self, message: str, retry_after_s: float = 1.0, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class NoModelPathError(OverloadedError):
    """Neither the GPU nor the CPU model service can take work now."""

    code = "no_model_path"


class DrainingError(OverloadedError):
    """This entry task is stopping (scale-in, deploy): send the request again, the load
    balancer routes it to another task."""

    code = "draining"


# --- access control and rollouts ---------------------------------------------------------


class AuthError(SevensenseError):
    """The caller could not be identified; the gateway answers with ``WWW-Authenticate``."""

    code = "unauthorized"
    http_status = 401


class MissingApiKeyError(AuthError):
    code = "missing_api_key"


class InvalidApiKeyError(AuthError):
    code = "invalid_api_key"


class ForbiddenError(AuthError):
    """The key is valid but lacks the scope the operation needs."""

    code = "insufficient_scope"
    http_status = 403


class RateLimitedError(SevensenseError):
    """The key has spent its token bucket; one token is back after ``retry_after_s``.

    Not an :class:`AuthError`: the caller is known and allowed, only too fast.
    """

    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


# --- live streams (WS /stream): the close code is 4000 + http_status ------------------------


class StreamProtocolError(RequestError):
    """A message the stream protocol does not allow here (a frame after ``end``, audio
    before ``open``, text that is not a control message)."""

    code = "stream_protocol"


class StreamNotFoundError(SevensenseError):
    """No resumable stream with that id for this key: never opened, ended, or expired."""

    code = "stream_not_found"
    http_status = 404


class StreamResumeError(SevensenseError):
    """A resume that would leave a gap: the client offers audio the server never got."""

    code = "resume_gap"
    http_status = 409


class ResumeRefusedError(SevensenseError):
    """A resume on a task that does not hold the stream, refused: a token that is forged,
    expired or from another fleet, a ``last_window`` the token does not vouch for, a model
    version this task does not serve, or a verify=true stream (its state is not rebuilt)."""

    code = "resume_refused"
    http_status = 409


class TooManyStreamsError(RateLimitedError):
    code = "too_many_streams"


class SlowReaderError(SevensenseError):
    """The client stopped reading its results; the stream was cut rather than buffered."""

    code = "slow_reader"
    http_status = 408


class RolloutError(SevensenseError):
    """Rollout weights that cannot route traffic (negative, all zero, none)."""

    code = "invalid_rollout"
    http_status = 400


class QualityGateError(SevensenseError):
    """A version that failed the ADR-007 Appendix B checklist may not take traffic; the old
    state keeps serving. ``details["failed"]`` lists the failed items."""

    code = "quality_gate_failed"
    http_status = 409


# --- resilience, storage and queues --------------------------------------------------------


class StorageError(SevensenseError):
    code = "storage_error"
    http_status = 502


class ObjectNotFoundError(StorageError):
    code = "object_not_found"
    http_status = 404


class ObjectTooLargeError(StorageError):
    code = "object_too_large"
    http_status = 413


class QueueError(SevensenseError):
    """The queue could not take or give a message (SQS unreachable, database locked)."""

    code = "queue_unavailable"
    http_status = 503


class JobNotFoundError(SevensenseError):
    code = "job_not_found"
    http_status = 404


class SubmissionNotFoundError(SevensenseError):
    """An archive submission id that no entry task recorded (``/admin/batch/...``)."""

    code = "submission_not_found"
    http_status = 404


# --- similarity search (index) -------------------------------------------------------------


class VectorIndexError(SevensenseError):
    """The index store could not be read or written (database unreachable, files unusable)."""

    code = "index_unavailable"
    http_status = 503


class IndexNotFoundError(VectorIndexError):
    """No index of that name, or no space in it for this model version and transform."""

    code = "index_not_found"
    http_status = 404


class IndexEmptyError(VectorIndexError):
    """The space exists but holds nothing this caller may search (none of its entries)."""

    code = "index_empty"
    http_status = 409


class DimensionMismatchError(VectorIndexError):
    """A vector whose width is not the space's: it came from another model or reducer."""

    code = "dimension_mismatch"
    http_status = 422


class CorruptIndexError(VectorIndexError):
    """An index file is short, or fails its checksum: the space is not served (wrong
    neighbours would be worse than none) until it is restored or rebuilt."""

    code = "index_corrupt"
    http_status = 503


# --- agile modeling: annotations and custom classifiers ------------------------------------


class WindowNotFoundError(SevensenseError):
    """No indexed window with that id (or covering that span) for this caller: it does not
    exist, or belongs to another tenant (the two are not told apart)."""

    code = "window_not_found"
    http_status = 404


class TooFewExamplesError(RequestError):
    """A class of the label set has fewer positive windows than training needs."""

    code = "too_few_examples"


class LabelSetError(RequestError):
    """A label set with one class and no negatives: nothing to tell the class apart from."""

    code = "one_class_label_set"


class ClassifierNotFoundError(ModelError):
    code = "classifier_not_found"
    http_status = 404


class ClassifierMismatchError(ModelError):
    """A classifier trained on one index space applied to embeddings of another."""

    code = "classifier_space_mismatch"
    http_status = 409


class AudioUnreachableError(SevensenseError):
    """A window's recording is not a file this service may read (uploads are not kept)."""

    code = "audio_unreachable"
    http_status = 404
