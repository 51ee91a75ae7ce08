"""The live dashboard: its pages and their static assets (HTML, CSS, JS in ../dashboard)."""

import html
from functools import cache
from importlib.resources import files
from urllib.parse import urlsplit

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

from ..deps import SettingsDep

__all__ = ["router"]

_DASHBOARD = files("orders_query") / "dashboard"

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page("index.html", ""), headers=_headers(""))


@router.api_route("/dashboard", methods=["GET", "HEAD"], include_in_schema=False)
async def dashboard(settings: SettingsDep) -> HTMLResponse:
    api_url = settings.api_public_url.rstrip("/")
    return HTMLResponse(_page("dashboard.html", api_url), headers=_headers(api_url))


@cache
def _page(name: str, api_url: str) -> str:
    """A page of the dashboard, with the api's address (where its form posts) filled in."""
    return (_DASHBOARD / name).read_text().replace("{{API_URL}}", html.escape(api_url, quote=True))


def _origin(url: str) -> str:
    """The origin (scheme, host, port) of an http(s) URL, '' for anything else: what a CSP
    source may name, with nothing that could end the directive."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return ""
    if any(c in parts.netloc for c in " ;,'\"") or "@" in parts.netloc:
        return ""
    return f"{parts.scheme}://{parts.netloc}"


@cache
def _headers(api_url: str) -> dict[str, str]:
    """Security headers of the pages: scripts and styles from this service only (the pages
    have no inline ones), fetches to it and to the api the form posts to, no framing."""
    connect = " ".join(filter(None, ["'self'", _origin(api_url)]))
    policy = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; form-action 'self'; base-uri 'none'; object-src 'none'; "
        "frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }


class _Assets(StaticFiles):
    """The pages' CSS and JS, served with `X-Content-Type-Options: nosniff`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


router.mount("/dashboard/assets", _Assets(packages=[("orders_query", "dashboard")]), name="assets")
