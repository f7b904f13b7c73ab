"""Live streams on ``WS /stream``: 16 sensors at real time, then how many real-time streams
the CPU path sustains on this host before a window's latency exceeds one hop.

    make load-streams   # or: .venv/bin/python -m load_tests.streams [--seconds 45]

One service graph is started as the tests start it (BirdNET, the default model; 3-s
windows, hop 3 s). Every stream is the reference client (``sevensense stream``'s code)
sending the 120-s soundscape at real time in 100-ms frames, each stream starting at a
random offset of the file so that windows do not arrive in lock-step; they run in this one
client process, which shares the two cores with the server (its CPU time is reported).

Window latency is the server's figure in each message (last sample of the window
received → result sent); ``e2e`` adds the client's side (result received). A level is
sustained while the p99 latency stays under one hop and every stream finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import soundfile as sf

from load_tests.server import OUT, REPO, Service, base_env, free_port
from load_tests.stats import cpu_s, latency_stats
from sevensense.audio.encoding import SampleEncoding
from sevensense.client.stream import PcmSource, stream_audio
from sevensense.serving.access.keys import generate_key, hash_key

SOUNDSCAPE = REPO.parent / "shared" / "audio" / "soundscape_birdnet_120s_48k.flac"
HOP_S = 3.0


class Looped(PcmSource):
    """``seconds`` of the soundscape from ``start`` (wrapping): many distinct streams from
    one copy of its samples in memory."""

    pcm: bytes = b""

    def __init__(self, start_s: float, seconds: float) -> None:
        if not Looped.pcm:
            data, _ = sf.read(SOUNDSCAPE, dtype="int16")
            Looped.pcm = data.astype("<i2").tobytes()
        self.format = (48000, 1, SampleEncoding.S16LE)
        self.start = int(start_s * 48000)
        self.total = int(seconds * 48000)

    def frames_from(self, offset: int, frame_samples: int) -> Iterator[bytes]:
        length = len(self.pcm) // 2
        while offset < self.total:
            at = (self.start + offset) % length
            n = min(frame_samples, length - at, self.total - offset)
            yield self.pcm[2 * at : 2 * (at + n)]
            offset += n


async def level(
    url: str, key: str, streams: int, seconds: float, options: dict[str, Any] | None = None
) -> dict[str, Any]:
    server_ms: list[float] = []
    e2e_ms: list[float] = []
    rng = random.Random(streams)
    client = psutil.Process()
    cpu_before = sum(client.cpu_times()[:2])

    async def one(i: int) -> int:
        sent_at = time.monotonic()
        rate = 48000.0

        def seen(body: dict[str, Any]) -> None:
            if body.get("type") == "window":
                server_ms.append(float(body["latency_ms"]))
                audio_end = sent_at + (body["start_sample"] / rate) + HOP_S
                e2e_ms.append(max(0.0, (time.monotonic() - audio_end) * 1e3))

        await asyncio.sleep(rng.random() * 1.0)
        sent_at = time.monotonic()
        run = await stream_audio(
            url,
            Looped(rng.random() * 120.0, seconds),
            {"top_k": 5, "stream_id": f"bench-{streams}-{i}", **(options or {})},
            api_key=key,
            speed=1.0,
            frame_ms=100.0,
            on_message=seen,
        )
        return len(run.windows)

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(streams)), return_exceptions=True)
    wall = time.monotonic() - started
    failed = [r for r in results if isinstance(r, BaseException)]
    windows = sum(r for r in results if isinstance(r, int))
    out: dict[str, Any] = {
        "streams": streams,
        "audio_s_per_stream": seconds,
        "wall_s": round(wall, 1),
        "windows": windows,
        "windows_per_s": round(windows / wall, 2),
        "failed_streams": len(failed),
        "errors": sorted({repr(f)[:160] for f in failed}),
        "client_cpu_s": round(sum(client.cpu_times()[:2]) - cpu_before, 1),
    }
    if server_ms:
        out["latency_server"] = {k: round(v, 1) for k, v in latency_stats(server_ms).items()}
        out["latency_e2e"] = {k: round(v, 1) for k, v in latency_stats(e2e_ms).items()}
    out["sustained"] = bool(
        not failed and server_ms and out["latency_server"]["p99_ms"] < HOP_S * 1e3
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=45.0, help="audio per stream per level")
    parser.add_argument("--levels", default="16,32,64,96,128,192,256")
    args = parser.parse_args()
    key = generate_key()
    with tempfile.TemporaryDirectory(prefix="7s-streams-") as tmp:
        state = Path(tmp)
        env = base_env(
            REPO / "models",
            state,
            [{"id": "bench", "sha256": hash_key(key), "scopes": ["embed", "read"]}],
            SEVENSENSE_SERVING__STREAM__MAX_PER_KEY="1024",
            SEVENSENSE_SERVING__STREAM__MAX_TOTAL="1024",
        )
        service = Service(free_port(), env, state / "server.log", {"bench": key})
        service.start()
        try:
            url = service.url.replace("http://", "ws://") + "/stream"
            server = psutil.Process(service.proc.pid) if service.proc else None
            report: dict[str, Any] = {"model": "birdnet-v2.4 (3-s windows, hop 3 s)", "levels": []}
            for n in [int(x) for x in args.levels.split(",")]:
                before = cpu_s(server)
                result = asyncio.run(level(url, key, n, args.seconds))
                after = cpu_s(server)
                result["server_cpu_s"] = {k: round(after[k] - before.get(k, 0.0), 1) for k in after}
                report["levels"].append(result)
                print(json.dumps(result), flush=True)
                if not result["sustained"]:
                    break
            sustained = [r["streams"] for r in report["levels"] if r["sustained"]]
            report["max_sustained_streams"] = max(sustained) if sustained else 0
        finally:
            service.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "streams.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "levels"}))
    sys.exit(0)


if __name__ == "__main__":
    main()
