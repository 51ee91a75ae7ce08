"""`GET /`: the tutorial served Swagger UI at its root."""

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

__all__ = ["router"]

router = APIRouter()


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    return RedirectResponse("/docs")
