"""`make openapi`: writes the committed OpenAPI documents, docs/openapi/{api,query,front-door}.json.

Each service's document is its app's own `app.openapi()`, of an app built (never served: no
server starts, nothing connects) with `AUTH_MODE=none` on loopback, the documents' one mode;
the front door's is the two merged (`orders_web.openapi.merge_documents`), as the gateway on
`GATEWAY_PORT` serves them on one origin. `tests/contract/test_openapi_documents.py` fails when
the live documents differ from the committed ones, so every change of the API shows in review.
"""

import argparse
from pathlib import Path
from typing import Any

import orjson

from orders_api.app import create_app as create_api
from orders_api.settings import Settings as ApiSettings
from orders_query.app import create_app as create_query
from orders_query.settings import Settings as QuerySettings
from orders_web.openapi import api_version, merge_documents

__all__ = ["FRONT_DOOR_TITLE", "FRONT_DOOR_VERSION", "OUTPUT", "documents", "main", "render"]

OUTPUT = Path(__file__).resolve().parents[4] / "docs" / "openapi"
"""docs/openapi of the repository."""

FRONT_DOOR_TITLE = "Order tracking"
FRONT_DOOR_VERSION = "1.0.0"
"""The base of the front door's `info.version` (a new major for a breaking change); the hash of
its paths and components follows it (`api_version`)."""
_FRONT_DOOR_DESCRIPTION = (
    "The front door (the gateway, port 5000 by default): places and cancels orders (the ingest "
    "api), reads them, their history, statistics and live updates (the query service), on one origin."
)


def documents() -> dict[str, dict[str, Any]]:
    """`api`, `query` and `front-door`: the documents the apps publish now."""
    loopback: dict[str, Any] = {"auth_mode": "none", "bind_host": "127.0.0.1"}
    api = create_api(ApiSettings(**loopback)).openapi()
    query = create_query(QuerySettings(**loopback)).openapi()
    merged = merge_documents(
        api, query, title=FRONT_DOOR_TITLE, version=FRONT_DOOR_VERSION, description=_FRONT_DOOR_DESCRIPTION
    )
    merged["info"]["version"] = api_version(merged, FRONT_DOOR_VERSION)
    return {"api": api, "query": query, "front-door": merged}


def render(document: dict[str, Any]) -> bytes:
    """The committed form: indented, keys in the order the app wrote them, a final newline."""
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder to write into (docs/openapi)")
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    for name, document in documents().items():
        path = args.output / f"{name}.json"
        path.write_bytes(render(document))
        print(f"wrote {path} ({document['info']['version']})")


if __name__ == "__main__":
    main()
