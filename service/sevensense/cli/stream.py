"""``sevensense stream``: the reference client of the service's ``WS /stream``, fed from an
audio file or raw PCM on stdin, printing each message as a JSON line.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sevensense.audio.encoding import SampleEncoding
from sevensense.cli.common import fail
from sevensense.errors import SevensenseError

if TYPE_CHECKING:
    from sevensense.client.stream import PcmSource


@click.command("stream")
@click.argument("source")
@click.option("--url", required=True, help="the service, e.g. http://host:3000 (or ws://…/stream)")
@click.option("--api-key", envvar="SEVENSENSE_API_KEY", default=None, help="or $SEVENSENSE_API_KEY")
@click.option("--model", default=None, help="name (canary-routed) or name:version[:variant]")
@click.option(
    "--speed",
    type=click.FloatRange(0.0),
    default=1.0,
    show_default=True,
    help="× real time for a file; 0 = as fast as the server reads",
)
@click.option("--frame-ms", type=click.FloatRange(1.0), default=100.0, show_default=True)
@click.option("--rate", type=int, default=None, help="stdin: sample rate of the raw PCM")
@click.option("--channels", type=int, default=1, show_default=True, help="stdin: interleaved")
@click.option(
    "--encoding",
    type=click.Choice([e.value for e in SampleEncoding]),
    default="s16le",
    show_default=True,
    help="stdin: sample format",
)
@click.option("--stream-id", default=None, help="name the stream (resumption, index)")
@click.option("--overlap", type=float, default=None, help="window overlap fraction")
@click.option("--top-k", type=int, default=None, help="species per window")
@click.option("--no-embedding", is_flag=True, help="species only: smaller messages")
@click.option("--lat", type=float, default=None)
@click.option("--lon", type=float, default=None)
@click.option("--week", type=int, default=-1)
@click.option("--index", "index_windows", is_flag=True, help="store windows in the index")
@click.option("--retries", type=int, default=5, show_default=True, help="reconnects in a row")
def stream(
    source: str,
    url: str,
    api_key: str | None,
    model: str | None,
    speed: float,
    frame_ms: float,
    rate: int | None,
    channels: int,
    encoding: str,
    stream_id: str | None,
    overlap: float | None,
    top_k: int | None,
    no_embedding: bool,
    lat: float | None,
    lon: float | None,
    week: int,
    index_windows: bool,
    retries: int,
) -> None:
    """Stream SOURCE (an audio file, or - for raw PCM on stdin, e.g. from arecord) to the
    service's WS /stream and print each message as one JSON line as it arrives; a dropped
    connection is resumed without missing or repeating a window."""
    from sevensense.client.stream import FileSource, stdin_source, stream_audio
    from sevensense.serving.stream.protocol import PATH as STREAM_PATH

    if source == "-":
        if rate is None:
            raise click.UsageError("raw PCM on stdin needs --rate")
        pcm: PcmSource = stdin_source(rate, channels, SampleEncoding(encoding))
    else:
        pcm = FileSource(Path(source))
    options: dict[str, Any] = {
        key: value
        for key, value in {
            "model": model,
            "stream_id": stream_id,
            "overlap": overlap,
            "top_k": top_k,
            "lat": lat,
            "lon": lon,
            "week": week if lat is not None else None,
            "index": index_windows or None,
            "include_embedding": False if no_embedding else None,
        }.items()
        if value is not None
    }
    target = url.rstrip("/")
    if target.startswith("http"):
        target = "ws" + target[4:]
    if not target.endswith(STREAM_PATH):
        target += STREAM_PATH

    def show(message: dict[str, Any]) -> None:
        click.echo(json.dumps(message))

    try:
        asyncio.run(
            stream_audio(
                target,
                pcm,
                options,
                api_key=api_key,
                speed=speed or None,
                frame_ms=frame_ms,
                retries=retries,
                on_message=show,
            )
        )
    except SevensenseError as exc:
        fail(exc)
