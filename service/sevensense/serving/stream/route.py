"""Where ``WS /stream`` joins the partner API's app: the wiring (serving/service.py) mounts
it on the app that serving/http built, so neither face imports the other."""

from __future__ import annotations

from fastapi import FastAPI

from sevensense.serving.lifecycle import on_drain
from sevensense.serving.stream.protocol import PATH
from sevensense.serving.stream.socket import Parts, StreamEndpoint
from sevensense.serving.tenant_index import SimilarityService
from sevensense.settings import Settings


def mount_stream(
    app: FastAPI, settings: Settings, parts: Parts, similarity: SimilarityService
) -> StreamEndpoint:
    """``parts`` is looked up per connection, like the HTTP routes' context: the gateway
    exists only once the worker has started."""
    endpoint = StreamEndpoint(settings, parts, similarity)
    # The protocol (messages, close codes) is in protocol.py; OpenAPI cannot describe a
    # WebSocket, so README.md documents it with a plain client.
    app.add_api_websocket_route(PATH, endpoint, name="stream")
    on_drain(endpoint.drain)  # SIGTERM: every open stream handed a resume point
    return endpoint
