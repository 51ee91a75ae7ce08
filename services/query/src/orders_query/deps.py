"""How routes reach the query service's clients: typed dependencies over what the lifespan put
in `app.state`."""

from typing import Annotated

from fastapi import Depends

from orders_readmodel.store import OrderStore
from orders_readmodel.stream import UpdateStream
from orders_web.auth import Auth, Principal, get_principal
from orders_web.http import state_getter

from .hub import Hub
from .settings import Settings
from .tickets import StreamTickets

__all__ = [
    "AuthDep",
    "HubDep",
    "PrincipalDep",
    "SettingsDep",
    "StoreDep",
    "StreamsDep",
    "TicketsDep",
    "get_hub",
    "get_settings",
    "get_store",
    "get_streams",
]

get_store = state_getter("store", OrderStore)
get_streams = state_getter("streams", tuple[UpdateStream, ...])
get_hub = state_getter("hub", Hub)
get_settings = state_getter("settings", Settings)
get_auth = state_getter("auth", Auth)
get_tickets = state_getter("tickets", StreamTickets)

StoreDep = Annotated[OrderStore, Depends(get_store)]
StreamsDep = Annotated[tuple[UpdateStream, ...], Depends(get_streams)]
"""Every shard's update stream, in shard order, on the store's client (reads that do not block)."""
HubDep = Annotated[Hub, Depends(get_hub)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
AuthDep = Annotated[Auth, Depends(get_auth)]
TicketsDep = Annotated[StreamTickets, Depends(get_tickets)]
