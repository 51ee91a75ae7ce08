"""How routes reach the api's clients: typed dependencies over what the lifespan put in `app.state`."""

from typing import Annotated

from fastapi import Depends, Request

from orders_common.store import OrderStore

from .publisher import Publisher
from .settings import Settings

__all__ = ["PublisherDep", "SettingsDep", "StoreDep", "get_publisher", "get_settings", "get_store"]


def get_store(request: Request) -> OrderStore:
    store: OrderStore = request.app.state.store
    return store


def get_publisher(request: Request) -> Publisher:
    publisher: Publisher = request.app.state.publisher
    return publisher


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[OrderStore, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
