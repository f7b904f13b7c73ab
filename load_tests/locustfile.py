"""The Locust user for ``POST /embed``: 5-s clips of the 120-s dawn-chorus soundscape.

    SEVENSENSE_LOAD_API_KEY=... .venv/bin/locust -f load_tests/locustfile.py --headless \\
        -H http://127.0.0.1:3000 -u 8 -r 8 -t 30s

``load_tests/run.py`` drives the same class programmatically. There is no wait time: every
user sends its next request as soon as the last one is answered, so the offered concurrency
is exactly the number of users (a closed loop), which is what the batcher sees from a
partner's upload script. Clips come from several offsets so that the service never sees the
same bytes twice in a row, and are cut once per process, in memory: decoding a FLAC per
request would cost the client more CPU than the service spends windowing it.

Self-contained (no project imports): the Locust CLI puts only this directory on sys.path.
"""

from __future__ import annotations

import io
import os
import random
from functools import cache
from pathlib import Path

import soundfile as sf
from locust import HttpUser, constant, task

SOUNDSCAPE = Path(__file__).resolve().parents[2] / "shared" / "audio"
SOUNDSCAPE = SOUNDSCAPE / "soundscape_birdnet_120s_48k.flac"
CLIP_S = 5.0
OFFSETS_S = (0.0, 7.5, 21.0, 33.0, 46.5, 58.0, 71.0, 84.5, 97.0, 110.0)
KEY_ENV = "SEVENSENSE_LOAD_API_KEY"
MODEL_ENV = "SEVENSENSE_LOAD_MODEL"


@cache
def clips(source: Path = SOUNDSCAPE) -> tuple[tuple[float, bytes], ...]:
    """(offset, 16-bit WAV bytes at the source's 48 kHz) for each offset."""
    data, rate = sf.read(source, dtype="float32")
    out = []
    for offset in OFFSETS_S:
        start = int(offset * rate)
        buf = io.BytesIO()
        sf.write(buf, data[start : start + int(CLIP_S * rate)], rate, format="WAV")
        out.append((offset, buf.getvalue()))
    return tuple(out)


def error_code(response: object) -> tuple[str, str]:
    """(code, message) of a failed answer: our JSON error body, else the transport error."""
    status = getattr(response, "status_code", 0)
    if not status:
        return "connection_error", str(getattr(response, "error", ""))[:200]
    try:
        error = response.json()["error"]  # type: ignore[attr-defined]
        return str(error["code"]), str(error.get("message", ""))[:200]
    except (ValueError, KeyError, TypeError):
        return "no_json_error", str(getattr(response, "text", ""))[:200]


class EmbedUser(HttpUser):
    """One partner script posting clips back to back with the key in $SEVENSENSE_LOAD_API_KEY;
    a non-200 answer is a failure named ``/embed [<status> <code>]``."""

    wait_time = constant(0)
    model: str | None = os.environ.get(MODEL_ENV) or None
    extra: tuple[tuple[str, str], ...] = ()  # more form fields, e.g. (("verify", "true"),)

    def on_start(self) -> None:
        key = os.environ.get(KEY_ENV)
        if not key:
            raise RuntimeError(f"set {KEY_ENV} to an API key with the embed scope")
        self.headers = {"X-API-Key": key}
        self.clips = clips()
        self.turn = random.randrange(len(self.clips))

    @task
    def embed(self) -> None:
        offset, data = self.clips[self.turn % len(self.clips)]
        self.turn += 1
        form = {**({"model": self.model} if self.model else {}), **dict(self.extra)}
        with self.client.post(
            "/embed",
            files={"audio": (f"soundscape_{offset:g}s.wav", data, "audio/wav")},
            data=form,
            headers=self.headers,
            name="/embed",
            catch_response=True,
        ) as response:
            if response.status_code == 200:
                try:
                    windows = len(response.json()["windows"])
                except (ValueError, KeyError, TypeError):
                    windows = 0
                if windows:
                    response.success()
                else:
                    response.failure("200 without windows")
                return
            code, message = error_code(response)
            response.request_meta["name"] = f"/embed [{response.status_code} {code}]"
            response.failure(f"{response.status_code} {code}: {message}")
