"""How routes reach the query service's clients: typed dependencies over what the lifespan put
in `app.state`."""

from typing import Annotated

from fastapi import Depends, Request

from orders_common.store import OrderStore
from orders_common.stream import UpdateStream

from .live import Hub
from .settings import Settings

__all__ = [
    "HubDep",
    "SettingsDep",
    "StoreDep",
    "StreamDep",
    "get_hub",
    "get_settings",
    "get_store",
    "get_stream",
]


def get_store(request: Request) -> OrderStore:
    store: OrderStore = request.app.state.store
    return store


def get_stream(request: Request) -> UpdateStream:
    stream: UpdateStream = request.app.state.stream
    return stream


def get_hub(request: Request) -> Hub:
    hub: Hub = request.app.state.hub
    return hub


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


StoreDep = Annotated[OrderStore, Depends(get_store)]
StreamDep = Annotated[UpdateStream, Depends(get_stream)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
