"""How routes reach the query service's clients: typed dependencies over what the lifespan put
in `app.state`."""

from typing import Annotated

from fastapi import Depends

from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_web.auth import Auth, Principal, get_principal
from orders_web.http import state_getter

from .live import Hub
from .settings import Settings
from .tickets import StreamTickets

__all__ = [
    "AuthDep",
    "HubDep",
    "PrincipalDep",
    "SettingsDep",
    "StoreDep",
    "StreamDep",
    "TicketsDep",
    "get_hub",
    "get_settings",
    "get_store",
    "get_stream",
]

get_store = state_getter("store", OrderStore)
get_stream = state_getter("stream", UpdateStream)
get_hub = state_getter("hub", Hub)
get_settings = state_getter("settings", Settings)
get_auth = state_getter("auth", Auth)
get_tickets = state_getter("tickets", StreamTickets)

StoreDep = Annotated[OrderStore, Depends(get_store)]
StreamDep = Annotated[UpdateStream, Depends(get_stream)]
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AuthDep = Annotated[Auth, Depends(get_auth)]
TicketsDep = Annotated[StreamTickets, Depends(get_tickets)]
