"""`GET /asyncapi.json`: the event contract (AsyncAPI 3.0), next to the OpenAPI document."""

from functools import cache
from typing import Any

from fastapi import APIRouter

from orders_common.asyncapi import asyncapi_document

from ..settings import get_settings

__all__ = ["router"]

router = APIRouter()


@cache
def _document() -> dict[str, Any]:
    return asyncapi_document(get_settings())


@router.get("/asyncapi.json", include_in_schema=False)
async def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of the topics this deployment uses, generated from the event models."""
    return _document()
