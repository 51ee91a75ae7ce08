"""Issue 12, item 7: HEAD on the dashboard's pages, and their security headers."""

from collections.abc import AsyncIterator

import httpx
import pytest

from orders_query.settings import Settings

from .test_reads import _client

pytestmark = pytest.mark.redis


@pytest.fixture
async def client(test_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        api_public_url="http://api.example:8000/",
    )
    async for c in _client(settings):
        yield c


@pytest.mark.parametrize("path", ["/", "/dashboard"])
async def test_pages_answer_head_and_get_with_security_headers(client: httpx.AsyncClient, path: str) -> None:
    head = await client.head(path)
    get = await client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.headers["content-type"] == get.headers["content-type"]
    for response in (head, get):
        policy = dict(
            part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";")
        )
        assert policy["script-src"] == "'self'"
        assert policy["style-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert policy["connect-src"] == (
            "'self' http://api.example:8000" if path == "/dashboard" else "'self'"
        )
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"


async def test_pages_have_no_inline_scripts_or_styles(client: httpx.AsyncClient) -> None:
    """What the policy would block: `<script>` without `src`, `<style>`, `style=`, `on...=`."""
    for path in ("/", "/dashboard"):
        page = (await client.get(path)).text.lower()
        assert "<style" not in page
        assert " style=" not in page
        assert " onclick=" not in page
        assert " onload=" not in page
        assert page.count("<script") == page.count("<script src=")


@pytest.mark.parametrize("asset", ["dashboard.js", "dashboard.css"])
async def test_assets_are_nosniff(client: httpx.AsyncClient, asset: str) -> None:
    response = await client.get(f"/dashboard/assets/{asset}")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
