"""``/docs`` and ``/redoc`` as FastAPI serves them, but with Swagger UI and ReDoc from the
installed ``fastapi-offline`` package instead of a CDN: the AWS deployment has no NAT and
field stations have no internet, and there the CDN pages stay blank. No ``Authorised``
dependency, so the front door leaves them open, like ``/openapi.json``."""

from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_ASSETS = "/docs/assets"
# The pages' own inline bootstrap and styles, and ReDoc's search worker, are all they need;
# the browser refuses anything else, such as the logo ReDoc would fetch from its CDN.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; frame-ancestors 'none'"
)


def add_docs(app: FastAPI) -> None:
    assert app.openapi_url is not None and app.swagger_ui_oauth2_redirect_url is not None
    openapi_url, redirect_url = app.openapi_url, app.swagger_ui_oauth2_redirect_url
    static = resources.files("fastapi_offline") / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(static)), name="docs-assets")

    def root(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    async def swagger_ui(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_swagger_ui_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{base}{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{base}{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png",
            oauth2_redirect_url=base + redirect_url,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    async def swagger_ui_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        base = root(request)
        page = get_redoc_html(
            openapi_url=base + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{base}{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{base}{DOCS_ASSETS}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = DOCS_CSP
        return page

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(redirect_url, swagger_ui_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)
