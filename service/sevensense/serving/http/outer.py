"""The middlewares BentoML wraps around its whole server, outside the partner API's app:
they see the requests that the app never matches (BentoML's own routes and unknown paths).
"""

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class JsonForUnmatched:
    """Paths outside our app fall through to BentoML's router, which answers 404/405 in plain
    text; rewrite those so that every error a partner can get has the same JSON shape."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        replaced = False

        async def rewrite(message: Message) -> None:
            nonlocal held, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                plain = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] in (404, 405) and not plain.startswith(b"application/json"):
                    held = message
                    return
            elif held is not None:
                status = held["status"]
                code = "not_found" if status == 404 else "method_not_allowed"
                rid = uuid.uuid4().hex
                text = "no such endpoint" if status == 404 else "method not allowed here"
                body = json.dumps(
                    {"error": {"code": code, "message": text, "request_id": rid}}
                ).encode()
                await send(
                    {
                        "type": "http.response.start",
                        "status": status,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-request-id", rid.encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                replaced = True
                return
            await send(message)

        await self.app(scope, receive, rewrite)


class ReadyDetail:
    """``GET /readyz?detail=1`` (or with ``Accept: application/json``) answers with each
    path's readiness and breaker; plain ``/readyz`` stays BentoML's, for load balancers."""

    def __init__(
        self, app: ASGIApp, detail: Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
    ) -> None:
        self.app = app
        self.detail = detail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path") == "/readyz" and self._wants(scope):
            try:
                ready, body = await self.detail()
            except RuntimeError as exc:  # the service is still starting
                ready, body = False, {"ready": False, "reason": str(exc)}
            response = JSONResponse(body, status_code=200 if ready else 503)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _wants(scope: Scope) -> bool:
        query = scope.get("query_string", b"").decode("latin-1")
        accept = dict(scope.get("headers") or []).get(b"accept", b"")
        return "detail" in query or accept.startswith(b"application/json")
