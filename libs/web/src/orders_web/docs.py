"""Swagger UI served from an installed package, never from a CDN: `/docs` works offline.

The assets are the files of swagger-ui-dist (Apache-2.0) as the `swagger-ui-bundle-v2`
package ships them (the same bytes as the npm release of the same version). Create the
app with `FastAPI(docs_url=None, redoc_url=None, ...)` and call `install_docs(app)`: it
serves

- `/docs`: Swagger UI for the app's OpenAPI document, scripts, styles and favicon local;
- `/docs/oauth2-redirect` (the app's `swagger_ui_oauth2_redirect_url`): the page Swagger
  UI's Authorize button returns to, self-contained;
- `/docs/assets/...`: those few files of the package, nothing else.

None of these routes is in the OpenAPI document. ReDoc is not served. Scripts named in
`app.state.swagger_ui_scripts` (URLs of the app's own) are added to the page after Swagger UI's.
"""

import html
from pathlib import Path

from fastapi import FastAPI, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Scope
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]  # no py.typed

__all__ = ["SWAGGER_UI_DIR", "install_docs"]

SWAGGER_UI_DIR = Path(str(swagger_ui_path))
"""swagger-ui-dist's files, as installed."""

_JS, _CSS, _FAVICON = "swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"


class _SwaggerAssets(StaticFiles):
    """Only the files the page loads: the package's own index.html, for one, points at an
    example API on the internet and is not ours to serve."""

    served = frozenset({_JS, _CSS, _FAVICON, "favicon-16x16.png"})

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in self.served:
            raise HTTPException(404, "Not Found")
        return await super().get_response(path, scope)


def install_docs(app: FastAPI, docs_url: str = "/docs") -> None:
    """Serve Swagger UI at `docs_url` with its assets under `{docs_url}/assets`, and the
    OAuth2 redirect page at the app's `swagger_ui_oauth2_redirect_url`. Swagger UI shows the
    app's `openapi_url`, `swagger_ui_parameters` and `swagger_ui_init_oauth`, as FastAPI's
    own `/docs` would."""
    openapi_url = app.openapi_url
    if not openapi_url:
        raise ValueError("Swagger UI needs the app's OpenAPI document: openapi_url is not set")
    if app.docs_url or app.redoc_url:
        raise ValueError(
            "create the app with docs_url=None and redoc_url=None: FastAPI's own load from a CDN"
        )
    assets = f"{docs_url}/assets"
    redirect_url = app.swagger_ui_oauth2_redirect_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        page = get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{assets}/{_JS}",
            swagger_css_url=f"{root}{assets}/{_CSS}",
            swagger_favicon_url=f"{root}{assets}/{_FAVICON}",
            oauth2_redirect_url=root + redirect_url if redirect_url else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )
        scripts = getattr(app.state, "swagger_ui_scripts", ())
        if not scripts:
            return page
        tags = "".join(f'<script src="{root}{html.escape(src)}"></script>' for src in scripts)
        return HTMLResponse(bytes(page.body).replace(b"</body>", tags.encode() + b"</body>"))

    app.add_route(docs_url, swagger_ui, methods=["GET"], include_in_schema=False)
    if redirect_url:

        async def oauth2_redirect(request: Request) -> HTMLResponse:
            return get_swagger_ui_oauth2_redirect_html()

        app.add_route(redirect_url, oauth2_redirect, methods=["GET"], include_in_schema=False)
    app.mount(assets, _SwaggerAssets(directory=SWAGGER_UI_DIR), name="swagger-ui-assets")
