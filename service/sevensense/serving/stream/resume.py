"""Resume tokens: a stream's progress, signed by the fleet, so that a resume reaching an
entry task that never saw the stream continues it from the client's own audio.

Why the client carries the state and not a shared store: a sensor must keep the audio the
server has not answered anyway (a drop loses what was in flight), and everything else a
stream's state holds (decoder, resampler, windower) is a function of that audio. So each
``window`` message carries a token naming the next window to answer; a task that does not
hold the stream checks the token's signature and key, restarts the resampler a little
before that window (:func:`sevensense.audio.live.resume_point`) and asks the client for
audio from there. No store to run, nothing lost when a task dies, and a resume costs one
window of audio (plus 50 ms of the resampler's look-back) sent again.

The token vouches for what the server answered: a client cannot claim windows it was never
sent, another key's token is refused as the stream is, and it pins the audio format, the
request's options and the model version the stream began on.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sevensense.errors import RequestError, ResumeRefusedError
from sevensense.serving.stream.protocol import StreamOpen
from sevensense.verification.agreement import GOOD, AgreementSummary, WindowVerification

# The opening message's fields that describe a connection, not the stream's request.
CONNECTION_FIELDS = frozenset(
    {
        "type",
        "api_key",
        "stream_id",
        "resume_from",
        "last_window",
        "last_verified",
        "resume_token",
        "model",
    }
)


class Tally(BaseModel):
    """verify=true: the agreement summary's running totals, carried across tasks so that a
    rebuilt stream's summary covers every window once."""

    model_config = ConfigDict(extra="forbid")

    w: int = 0  # windows compared
    c: int = 0  # windows with an agreement
    s: float = 0.0  # sum of the agreements
    g: int = 0  # agreements >= GOOD
    d: int = 0  # discrepancies
    r: dict[str, int] = Field(default_factory=dict)  # null reasons

    def add(self, v: WindowVerification) -> None:
        self.w += 1
        self.d += len(v.discrepancies)
        if v.agreement is None:
            reason = v.reason or "unknown"
            self.r[reason] = self.r.get(reason, 0) + 1
        else:
            self.c += 1
            self.s += v.agreement
            self.g += v.agreement >= GOOD - 1e-9

    def summary(self) -> AgreementSummary:
        counted = self.c or None
        return AgreementSummary(
            windows=self.w,
            counted=self.c,
            mean=round(self.s / counted, 6) if counted else None,
            share_ge_0_8=round(self.g / counted, 6) if counted else None,
            discrepancies=self.d,
            null_reasons=dict(self.r),
        )


class ResumeState(BaseModel):
    """What a token says; short names keep it small, since every window message has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = 1
    sid: str  # stream_id
    key: str  # the owner's key id
    rate: int
    ch: int
    enc: str
    opts: str  # digest of the request's options
    model: str  # the pinned identity, name:version:variant
    asked: str | None  # the model the first opening named (None: routed)
    next: int  # index of the window to answer next
    last: int  # start_sample of the last window answered, -1 when none
    n: int  # windows answered
    sk: int  # windows skipped (silent)
    r: int  # resumes so far
    f: int = 0  # frames received, all tasks
    b: int = 0  # bytes received, all tasks
    t: int = 0  # throttle notices
    ix: int = 0  # windows indexed (index=true)
    # verify=true: the first window whose verification is not computed yet (the tally
    # covers exactly the windows before it), and the first whose verification may not have
    # reached the client (every one before it was sent before this token).
    vp: int | None = None
    vq: int | None = None
    vt: Tally | None = None
    at: float  # issued, unix seconds


def options_digest(opened: StreamOpen) -> str:
    body = opened.model_dump(mode="json", exclude=set(CONNECTION_FIELDS))
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ResumeTokens:
    """Signs and checks tokens with the fleet's key (``serving.stream.resume_secret``)."""

    def __init__(self, secret: str | None, ttl_s: float) -> None:
        # Without a shared key tokens still serve same-task resumes of this process only.
        self._key = (secret or secrets.token_hex(32)).encode()
        self.ttl_s = ttl_s

    def _mac(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:20]

    def sign(self, state: ResumeState) -> str:
        payload = state.model_dump_json().encode()
        return f"{_b64(payload)}.{_b64(self._mac(payload))}"

    def check(self, token: str, key_id: str, stream_id: str) -> ResumeState:
        """The state a genuine, fresh token of this key's stream holds; refused otherwise."""
        try:
            head, mac = token.split(".", 1)
            payload = _unb64(head)
            genuine = hmac.compare_digest(self._mac(payload), _unb64(mac))
        except ValueError:
            genuine = False
        if not genuine:
            raise ResumeRefusedError(
                "the resume token is not one this fleet signed (altered, or another "
                "deployment's key)",
                reason="signature",
            )
        try:
            state = ResumeState.model_validate_json(payload)
        except ValidationError:
            raise ResumeRefusedError("unreadable resume token", reason="signature") from None
        if state.key != key_id or state.sid != stream_id:
            # As for a stream held in memory: another key's stream is not found, not named.
            raise ResumeRefusedError(
                f"the resume token is not one of stream {stream_id!r} for this key",
                reason="stream",
            )
        age = time.time() - state.at
        if age > self.ttl_s:
            raise ResumeRefusedError(
                f"the resume token is {age:.0f} s old; tokens last {self.ttl_s:g} s",
                reason="expired",
            )
        return state


def check_same_request(opened: StreamOpen, state: ResumeState) -> None:
    """A resume must send the stream's audio format and options (the token pins them); the
    same refusals as a resume on the task holding the stream (:func:`.sessions.check_resume`)."""
    if (opened.sample_rate, opened.channels, str(opened.encoding)) != (
        state.rate,
        state.ch,
        state.enc,
    ):
        raise RequestError(
            f"stream {state.sid} carries {state.ch}-channel {state.enc} at {state.rate} Hz; "
            "a resume must send the same",
            stream_id=state.sid,
        )
    if options_digest(opened) != state.opts:
        raise RequestError(
            f"stream {state.sid} was opened with other options; a resume must send the same",
            stream_id=state.sid,
        )
    if opened.model not in (None, state.asked, state.model):
        raise RequestError(
            f"stream {state.sid} runs {state.model}; a resume cannot change the model",
            stream_id=state.sid,
        )
    if opened.last_window is not None and opened.last_window != state.last:
        raise ResumeRefusedError(
            f"last_window {opened.last_window} is not the window the token vouches for "
            f"({state.last}): send the token that came with your last window",
            reason="last_window",
            token_last_window=state.last,
        )
