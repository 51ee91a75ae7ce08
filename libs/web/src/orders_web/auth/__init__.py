"""Access control: who is calling (an OpenID Connect access token, or nobody in `AUTH_MODE=none`),
and how many requests they may make.

- `AUTH_MODE=oidc`: every request but the app's public ones needs
  `Authorization: Bearer <JWT access token>` from the provider named by
  `OIDC_ISSUER` (`tokens`); a route the app names may take a stream ticket
  instead. `AUTH_MODE=none`: everyone is `ANONYMOUS`, who may do everything (the
  tutorial's open API); refused on a non-loopback address unless set explicitly
  (`bind`).
- `principal`: the `Principal` and its `Role`, what each may do (the routes
  decide, with its methods; another user's order is 404), `get_principal`.
- `middleware`: `Auth`, one app's access control, made by its `create_app`
  with its public paths and ticket routes (this package names no service's
  path), and `AuthMiddleware`, which the app lists in its middleware.
- `ratelimit`: requests per principal and window, counted in Redis.
- `openapi`: the security schemes in the app's OpenAPI document.
"""

import logging

from fastapi import FastAPI

from orders_web.auth.bind import check_bind
from orders_web.auth.middleware import (
    TOOLKIT_PUBLIC_PATHS,
    TOOLKIT_PUBLIC_PREFIXES,
    Auth,
    AuthMiddleware,
    TicketRedeemer,
    redact_query,
)
from orders_web.auth.openapi import document_security
from orders_web.auth.principal import ANONYMOUS, AuthError, Principal, Role, get_principal
from orders_web.auth.ratelimit import Limited, RateLimiter
from orders_web.auth.tokens import ProviderUnavailable, Verifier

__all__ = [
    "ANONYMOUS",
    "TOOLKIT_PUBLIC_PATHS",
    "TOOLKIT_PUBLIC_PREFIXES",
    "Auth",
    "AuthError",
    "AuthMiddleware",
    "Limited",
    "Principal",
    "ProviderUnavailable",
    "RateLimiter",
    "Role",
    "TicketRedeemer",
    "Verifier",
    "check_bind",
    "get_principal",
    "install_auth",
    "redact_query",
]


def install_auth(app: FastAPI, auth: Auth) -> None:
    """What `auth` needs of `app` besides its place in the middleware list: `app.state.auth`
    (for `get_principal` and the lifespan, which starts and stops it), a ticket-free access
    log, and in oidc mode the OpenAPI security description and Swagger UI's client id."""
    app.state.auth = auth
    logging.getLogger("uvicorn.access").addFilter(redact_query)
    if auth.enabled:
        document_security(app, auth)
        if auth.settings.oidc_swagger_client_id:
            app.swagger_ui_init_oauth = {"clientId": auth.settings.oidc_swagger_client_id}
