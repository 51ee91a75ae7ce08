"""The HTTP ceiling: a bare FastAPI app served exactly as our services are.

`python -m orders_bench.bare PORT WORKERS` serves it through
`orders_web.serving.serve`, the same uvicorn runner (uvloop, httptools, no
access log) the api and query services use. It answers the same paths: a POST
of an order's JSON (read, not validated) and GETs, each with a small JSON and
no other work, so its throughput is what FastAPI itself allows on this machine.
"""

import sys

from fastapi import FastAPI, Request
from starlette.responses import Response

from orders_contract.settings import HttpSettings
from orders_web.serving import serve

__all__ = ["create_app"]

_ACCEPTED = b'{"success":true,"message":"Order accepted","data":{"orderId":"bare"}}'
_FOUND = b'{"success":true,"message":"Order found","data":{"orderId":"bare"}}'
_LIST = b'{"success":true,"message":"0 orders","data":[],"page":{"limit":20,"nextCursor":null}}'


def create_app() -> FastAPI:
    app = FastAPI(title="bare", docs_url=None, redoc_url=None, openapi_url=None)

    @app.post("/api/orders")
    async def place(request: Request) -> Response:
        await request.body()
        return Response(_ACCEPTED, 202, media_type="application/json")

    @app.get("/api/orders/{order_id}")
    async def one(order_id: str) -> Response:
        return Response(_FOUND, media_type="application/json")

    @app.get("/api/orders")
    async def page(limit: int = 100) -> Response:
        return Response(_LIST, media_type="application/json")

    @app.get("/health/ready")
    async def ready() -> Response:
        return Response(b'{"success":true}', media_type="application/json")

    return app


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    # The same server, limits included, as the services run under.
    serve("orders_bench.bare:create_app", HttpSettings(bind_host="127.0.0.1"), port, workers, "WARNING")


if __name__ == "__main__":
    main()
