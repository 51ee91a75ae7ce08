"""The live dashboard: its pages and their static assets (HTML, CSS, JS in ../dashboard)."""

import html
from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from ..deps import SettingsDep

__all__ = ["router"]

_DASHBOARD = files("orders_query") / "dashboard"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> HTMLResponse:
    return HTMLResponse(_page("index.html", ""))


@router.get("/dashboard", include_in_schema=False)
async def dashboard(settings: SettingsDep) -> HTMLResponse:
    return HTMLResponse(_page("dashboard.html", settings.api_public_url.rstrip("/")))


@cache
def _page(name: str, api_url: str) -> str:
    """A page of the dashboard, with the api's address (where its form posts) filled in."""
    return (_DASHBOARD / name).read_text().replace("{{API_URL}}", html.escape(api_url, quote=True))


router.mount("/dashboard/assets", StaticFiles(packages=[("orders_query", "dashboard")]), name="assets")
