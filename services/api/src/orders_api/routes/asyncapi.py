"""The event contract next to the OpenAPI: `GET /asyncapi.json` (AsyncAPI 3.0, generated from the
event models) and `GET /asyncapi`, a readable page of it.

The page is the `<asyncapi-viewer>` web component as the `asyncapi-viewer` package ships it
(its built files, in the wheel): served from here, never from a CDN, so it works offline.
"""

from functools import cache
from typing import Any

from asyncapi_viewer.assets import STATIC_DIR, VIEWER_IIFE, VIEWER_THEME  # type: ignore[import-untyped]
from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse

from orders_api.asyncapi import asyncapi_document

from ..settings import get_settings

__all__ = ["router"]

router = APIRouter()

_ASSETS = {VIEWER_IIFE: "text/javascript", VIEWER_THEME: "text/css"}
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Order tracking events (AsyncAPI)</title>
<link rel="stylesheet" href="/asyncapi/assets/{VIEWER_THEME}">
<script src="/asyncapi/assets/{VIEWER_IIFE}" defer></script>
</head>
<body>
<asyncapi-viewer src="/asyncapi.json" sidebar></asyncapi-viewer>
</body>
</html>
"""


@cache
def _document() -> dict[str, Any]:
    return asyncapi_document(get_settings())


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics this deployment uses, generated from the event models."""
    return _document()


@router.get("/asyncapi", include_in_schema=False)
async def asyncapi_page() -> HTMLResponse:
    return HTMLResponse(_PAGE)


@router.get("/asyncapi/assets/{name}", include_in_schema=False)
async def asyncapi_asset(name: str) -> FileResponse:
    """Only the viewer's script and theme, nothing else of the package."""
    if name not in _ASSETS:
        raise HTTPException(404, "Not found")
    return FileResponse(STATIC_DIR / name, media_type=_ASSETS[name])
