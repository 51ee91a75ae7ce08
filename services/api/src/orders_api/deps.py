"""How routes reach the api's clients: typed dependencies over what the lifespan put in `app.state`."""

from typing import Annotated

from fastapi import Depends, Request

from orders_readmodel.store import OrderStore
from orders_web.auth import Principal, get_principal
from orders_web.http import state_getter

from .placing import OrderDesk
from .publisher import Publisher
from .settings import Settings

__all__ = [
    "DeskDep",
    "PrincipalDep",
    "PublisherDep",
    "SettingsDep",
    "StoreDep",
    "get_app_settings",
    "get_desk",
    "get_publisher",
    "get_store",
]

get_store = state_getter("store", OrderStore)
get_publisher = state_getter("publisher", Publisher)
get_app_settings = state_getter("settings", Settings)
"""The settings this app was created with (`create_app`'s), not the environment's
(`settings.get_settings`)."""


def get_desk(request: Request) -> OrderDesk:
    """The protocol of placing and cancelling, on this app's store, publisher and settings."""
    return OrderDesk(get_store(request), get_publisher(request), get_app_settings(request))


StoreDep = Annotated[OrderStore, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
DeskDep = Annotated[OrderDesk, Depends(get_desk)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
