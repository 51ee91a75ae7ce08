"""The ingest API: `POST /api/orders` answers 202 only once Kafka holds the order."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError
from starlette.responses import Response

from orders_common.events import encode_placed
from orders_common.http import envelope, health_router, install_common, unavailable, validation_failed
from orders_common.models import Envelope, ErrorEnvelope, Order, OrderCreate

from .publisher import KafkaUnavailable, Publisher
from .settings import Settings, get_settings

__all__ = ["create_app"]

_JSON_TYPES = ("application/json", "application/cloudevents+json")

_ORDER_BODY = {
    "required": True,
    "content": {"application/json": {"schema": OrderCreate.model_json_schema()}},
}


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


PublisherDep = Annotated[Publisher, Depends(get_publisher)]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    publisher = Publisher(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await publisher.start()
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(
        title="Order ingest API",
        version="0.1.0",
        description="Places orders: validates them and publishes them to Kafka. "
        "Read them back on the query service.",
        lifespan=lifespan,
    )
    app.state.publisher = publisher
    install_common(app, settings.cors_origins)
    app.include_router(health_router({"kafka": publisher.check}))
    location = settings.query_public_url.rstrip("/") + "/api/orders/{}"

    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.post(
        "/api/orders",
        status_code=202,
        summary="Place an order",
        response_model=Envelope[Order],
        openapi_extra={"requestBody": _ORDER_BODY},
        responses={
            400: {"model": ErrorEnvelope, "description": "Invalid order (see `errors`)"},
            413: {"model": ErrorEnvelope, "description": "Body over 64 KiB"},
            415: {"model": ErrorEnvelope, "description": "Body is not JSON"},
            503: {"model": ErrorEnvelope, "description": "Kafka cannot take the order now"},
        },
    )
    async def place_order(request: Request, publisher: PublisherDep) -> Response:
        """Validate the order, publish `order.placed` keyed by its id, and answer 202 once
        every in-sync Kafka replica holds it. Track it on the query service (`Location`)."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() not in _JSON_TYPES:
            return envelope("Content-Type must be application/json", status_code=415)
        try:
            order = Order.place(OrderCreate.model_validate_json(await request.body()))
        except ValidationError as exc:
            return validation_failed(exc)
        try:
            await publisher.publish(order.order_id, encode_placed(order))
        except KafkaUnavailable as exc:
            return unavailable(f"Order not accepted, Kafka is unavailable: {exc}")
        return envelope(
            "Order accepted",
            order.model_dump(mode="json"),
            status_code=202,
            headers={"Location": location.format(order.order_id)},
        )

    return app
