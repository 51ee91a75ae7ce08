"""How a JSON request body is read exactly: numbers as the decimals written, no key twice.

pydantic's JSON parser reads every number with a fraction as a float and lets a repeated key's
last value win; for money both are wrong. The fast path (orders_web.fastpath) parses bodies
with `load_json_exact` and validates the result in Python mode.
"""

import json
from decimal import Decimal
from typing import Any

from pydantic_core import from_json

__all__ = ["DuplicateKey", "load_json_exact"]


class DuplicateKey(ValueError):
    """A JSON object that names a key twice: refused rather than let the last one win."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}: each key may appear once in an object")
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj


def load_json_exact(raw: bytes) -> Any:
    """A JSON body as Python values, keeping what pydantic's JSON parser loses: numbers with a
    fraction or an exponent as the exact Decimal written, and DuplicateKey for an object that
    names a key twice (in any object of the body).

    ValueError for anything else that is not JSON pydantic would read: invalid UTF-8, a
    syntax error, an integer too long for `int`, a lone surrogate in an escape (`from_json`
    checks those, only when the text has an escape). Validate the result in Python mode.
    """
    text = raw.decode()
    if "\\u" in text:
        from_json(raw)
    return json.loads(text, object_pairs_hook=_unique_keys, parse_float=Decimal)
