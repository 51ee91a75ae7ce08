"""The OpenAPI description of access control (AUTH_MODE=oidc): the security schemes, the
401, 403 and 429 answers of every non-public operation, and the script that gives Swagger
UI's client-credentials request the app's audience."""

from copy import deepcopy
from typing import Any

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from orders_web.auth.middleware import Auth

__all__ = ["document_security"]

_ERROR_REF = {"$ref": "#/components/schemas/ErrorEnvelope"}


def document_security(app: FastAPI, auth: Auth) -> None:
    """Every operation but the public ones needs a bearer token (or the client-credentials
    flow against the provider's token endpoint) and may answer 401, 403 and 429; Swagger UI's
    Authorize asks for the token with the app's audience.

    This wraps `app.openapi`, the way FastAPI documents for changing the generated document
    ("Extending OpenAPI"), rather than declaring `Security(...)` dependencies on the routes:
    the routers are module-level and serve both AUTH_MODEs, the description is the app's
    settings' (oidc only), and the client-credentials token URL is, by default, the one the
    provider's discovery document names, known only once the lifespan has started. Built
    once, at the first request for the document."""
    make = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = deepcopy(make())
        app.openapi_schema = None  # built again below, with the security schemes
        schemes: dict[str, Any] = {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "An access token of the provider (`make token USER=7` prints one).",
            }
        }
        token_url = auth.settings.oidc_token_url or (auth.verifier.token_endpoint if auth.verifier else None)
        if token_url:
            s = auth.settings
            scopes = {s.oidc_service_role: "A service client: places orders for any user"}
            schemes["clientCredentials"] = {
                "type": "oauth2",
                "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": scopes}},
            }
        schema.setdefault("components", {})["securitySchemes"] = schemes
        schema["security"] = [{name: []} for name in schemes]
        errors = {
            "401": "No token, or one that is not valid (see `message`)",
            "403": "The token's principal may not do this",
            "429": "Too many requests from this principal; retry after `Retry-After`",
        }
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if auth.is_public(path):
                    operation["security"] = []
                    continue
                responses = operation.setdefault("responses", {})
                for code, description in errors.items():
                    responses.setdefault(
                        code,
                        {"description": description, "content": {"application/json": {"schema": _ERROR_REF}}},
                    )
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    script = _AUDIENCE_JS.replace("AUDIENCE", orjson.dumps(auth.settings.oidc_audience).decode())

    async def audience_js(request: Request) -> Response:
        return Response(script, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})

    app.add_route("/docs/oauth2-audience.js", audience_js, methods=["GET"], include_in_schema=False)
    app.state.swagger_ui_scripts = ["/docs/oauth2-audience.js"]


_AUDIENCE_JS = """"use strict";
// Swagger UI's client-credentials request carries only grant_type and scope, and providers such
// as Ory Hydra put an audience in the token only when the request names one: add ours.
(() => {
  const audience = AUDIENCE;
  const wrap = () => {
    if (typeof ui === "undefined") return setTimeout(wrap, 50);
    const configs = ui.getConfigs();
    const previous = configs.requestInterceptor;
    configs.requestInterceptor = (request) => {
      const body = request.body;
      const asked = typeof body === "string" && body.includes("grant_type=client_credentials");
      if (asked && !body.includes("audience=")) {
        request.body = `${body}&audience=${encodeURIComponent(audience)}`;
      }
      return previous ? previous(request) : request;
    };
  };
  wrap();
})();
"""
