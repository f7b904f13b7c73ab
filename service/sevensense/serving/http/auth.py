"""A route's required scope, declared once as its dependency, where both FastAPI and the
front door can read it."""

from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader

from sevensense.identity import ApiKeyRecord
from sevensense.identity import Scope as KeyScope
from sevensense.serving.access.admission import admit, anonymous
from sevensense.serving.access.keys import API_KEY_HEADER, key_from_headers
from sevensense.serving.http.context import parts_of
from sevensense.serving.http.front_door import STATE_KEY

API_KEY = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="partner key")


class Authorised:
    """The front door reads the scope to decide before the body is read, and leaves the
    key it admitted in the request state; FastAPI then runs this, which returns that key
    (the request is charged to the rate limit once) or, when the front door could not
    decide (the service was still starting), admits the headers itself."""

    def __init__(self, scope: KeyScope) -> None:
        self.scope: KeyScope = scope

    def __call__(
        self,
        request: Request,
        x_api_key: Annotated[str | None, Depends(API_KEY)],
        authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    ) -> ApiKeyRecord:
        parts = parts_of(request)
        if not parts.settings.serving.auth_required:
            return anonymous(self.scope)
        admitted = request.scope.get("state", {}).get(STATE_KEY)
        if isinstance(admitted, ApiKeyRecord):
            return admitted
        ctx = parts.context()
        return admit(ctx.keys, ctx.limiter, key_from_headers(authorization, x_api_key), self.scope)


def authorised(scope: KeyScope) -> Authorised:
    return Authorised(scope)


def route_scope(route: APIRoute) -> KeyScope | None:
    """The scope a route's ``Authorised`` dependency asks for; None: the route is open."""
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Authorised):
            return dependency.call.scope
        stack.extend(dependency.dependencies)
    return None
