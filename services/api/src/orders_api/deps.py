"""How routes reach the api's clients: typed dependencies over what the lifespan put in `app.state`."""

from typing import Annotated

from fastapi import Depends

from orders_readmodel.store import OrderStore
from orders_web.auth import Principal, get_principal
from orders_web.http import state_getter

from .publisher import Publisher
from .settings import Settings

__all__ = [
    "PrincipalDep",
    "PublisherDep",
    "SettingsDep",
    "StoreDep",
    "get_app_settings",
    "get_publisher",
    "get_store",
]

get_store = state_getter("store", OrderStore)
get_publisher = state_getter("publisher", Publisher)
get_app_settings = state_getter("settings", Settings)
"""The settings this app was created with (`create_app`'s), not the environment's
(`settings.get_settings`)."""

StoreDep = Annotated[OrderStore, Depends(get_store)]
PublisherDep = Annotated[Publisher, Depends(get_publisher)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
