"""Who makes a request: the `Principal` (a token's subject, the user it acts as, its role), what
each role may do, and `get_principal`, the routes' dependency that reads it."""

import enum
from dataclasses import dataclass

import orjson
from fastapi import HTTPException, Request

__all__ = ["ANONYMOUS", "AuthError", "Principal", "Role", "get_principal"]


class Role(enum.StrEnum):
    ANONYMOUS = "anonymous"
    """AUTH_MODE=none: anyone, who may do everything."""
    CUSTOMER = "customer"
    STAFF = "staff"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the token's subject, the user it acts as, and its role."""

    subject: str
    user_id: int | None
    role: Role

    @property
    def reads_all(self) -> bool:
        """Every order, every feed, the statistics (staff, service clients; anyone in none)."""
        return self.role is not Role.CUSTOMER

    def may_read(self, user_id: int) -> bool:
        return self.reads_all or user_id == self.user_id

    def may_place_for(self, user_id: int) -> bool:
        return self.role in (Role.ANONYMOUS, Role.SERVICE) or user_id == self.user_id

    def may_cancel(self, user_id: int) -> bool:
        return self.role in (Role.ANONYMOUS, Role.STAFF) or user_id == self.user_id

    @property
    def idempotency_owner(self) -> str:
        """What an Idempotency-Key belongs to besides the order's user: '' in none mode (the
        tutorial's keys, per user), else the token's subject."""
        return "" if self.role is Role.ANONYMOUS else f"{self.role}:{self.subject}"

    def to_json(self) -> bytes:
        return orjson.dumps({"sub": self.subject, "userId": self.user_id, "role": self.role.value})

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Principal":
        data = orjson.loads(raw)
        return cls(str(data["sub"]), data["userId"], Role(data["role"]))


ANONYMOUS = Principal("anonymous", None, Role.ANONYMOUS)


class AuthError(Exception):
    """A request without a usable identity: 401 (or 403 for a token that names no user)."""

    def __init__(self, message: str, status: int = 401, code: str = "invalid_token") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code

    @property
    def headers(self) -> dict[str, str]:
        if self.status != 401:
            return {}
        if self.code == "":
            return {"WWW-Authenticate": "Bearer"}
        return {"WWW-Authenticate": f'Bearer error="{self.code}", error_description="{self.message}"'}


def get_principal(request: Request) -> Principal:
    """The request's principal (a dependency: `PrincipalDep` in each service's deps.py)."""
    principal = request.scope.get("state", {}).get("principal")
    if isinstance(principal, Principal):
        return principal
    auth = getattr(request.app.state, "auth", None)
    if auth is not None and auth.enabled:  # a route the middleware let through as public
        raise HTTPException(401, "A bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    return ANONYMOUS
