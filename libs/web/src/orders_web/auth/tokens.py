"""Access tokens of one OpenID Connect provider, verified with PyJWT against the provider's keys.

The keys (JWKS) are found through the provider's discovery document, fetched with
httpx without blocking the event loop, cached, and fetched again for an unknown
`kid` at most every `OIDC_JWKS_MIN_REFETCH_S`. RS256 or ES256 only; `iss`, `aud`,
`exp` and `nbf` checked with `OIDC_CLOCK_SKEW_S` of leeway, and the registered
claims held to their types and ranges. Verified tokens are cached (bounded,
never past their `exp`).
"""

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any

import httpx
import jwt

from orders_contract.models import MAX_USER_ID
from orders_contract.settings import AuthSettings
from orders_web.auth.principal import AuthError, Principal, Role

__all__ = ["ProviderUnavailable", "Verifier"]

log = logging.getLogger(__name__)


class ProviderUnavailable(Exception):
    """The provider's discovery document or keys cannot be read (a 503, retried)."""


_REASONS: list[tuple[type[jwt.InvalidTokenError], str]] = [
    (jwt.ExpiredSignatureError, "The token has expired"),
    (jwt.ImmatureSignatureError, "The token is not valid yet"),
    (jwt.InvalidIssuerError, "The token's issuer is not accepted"),
    (jwt.InvalidAudienceError, "The token's audience is not accepted"),
    (jwt.MissingRequiredClaimError, "The token lacks a required claim"),
    (jwt.InvalidSignatureError, "The token's signature does not verify"),
]


class Verifier:
    """Verifies access tokens of one OpenID Connect provider."""

    def __init__(self, settings: AuthSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self.issuer = settings.oidc_issuer.rstrip("/")
        self.algorithms = frozenset(a.strip() for a in settings.oidc_algorithms.split(",") if a.strip())
        self.roles_claims = [c.strip() for c in settings.oidc_roles_claims.split(",") if c.strip()]
        self.token_endpoint: str | None = None
        self._issuer_claim = settings.oidc_issuer
        self._jwks_uri: str | None = None
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -1e9
        self._refresh: asyncio.Task[None] | None = None
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def start(self) -> None:
        """Read the discovery document and keys once (a provider that does not answer yet
        only gets a warning: the first token fetches them)."""
        try:
            await self._refetch()
        except ProviderUnavailable as exc:
            log.warning("OpenID Connect provider not reachable at start (retried on use): %s", exc)

    async def principal(self, token: str) -> Principal:
        if len(token) > self.settings.oidc_max_token_bytes:
            raise AuthError("The token is too large")
        now = time.time()
        cached = self._cache.get(token)
        if cached is not None:
            if cached[1] > now:
                return cached[0]
            del self._cache[token]
        claims = await self._verify(token)
        exp = _checked_claims(claims)
        principal = self._principal(claims)
        self._remember(token, principal, exp, now)
        return principal

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise AuthError("The token is malformed") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError(f"The token's algorithm is not accepted (use one of {sorted(self.algorithms)})")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise AuthError("The token names no signing key (kid)")
        key = await self._key(kid)
        if key is None:
            raise AuthError("The token's signing key is unknown")
        if key.algorithm_name != alg:
            raise AuthError("The token's algorithm does not match its key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.settings.oidc_audience,
                issuer=self._issuer_claim,
                leeway=self.settings.oidc_clock_skew_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            for kind, reason in _REASONS:
                if isinstance(exc, kind):
                    raise AuthError(reason) from None
            raise AuthError("The token is malformed") from None
        return claims

    def _principal(self, claims: dict[str, Any]) -> Principal:
        s = self.settings
        roles: set[str] = set()
        for name in self.roles_claims:
            value = claims.get(name)
            if isinstance(value, str):
                roles.update(value.split())
            elif isinstance(value, list):
                roles.update(v for v in value if isinstance(v, str))
        raw = claims.get(s.oidc_user_claim)
        user_id = _user_id(raw)
        subject = str(claims["sub"])
        if s.oidc_staff_role in roles:
            return Principal(subject, user_id, Role.STAFF)
        if s.oidc_service_role in roles:
            return Principal(subject, user_id, Role.SERVICE)
        if user_id is None:
            raise AuthError(f"The token carries no user id ({s.oidc_user_claim})", status=403)
        return Principal(subject, user_id, Role.CUSTOMER)

    def _remember(self, token: str, principal: Principal, exp: float, now: float) -> None:
        s = self.settings
        if s.oidc_token_cache_s <= 0 or s.oidc_token_cache_size <= 0:
            return
        self._cache[token] = (principal, min(exp, now + s.oidc_token_cache_s))
        while len(self._cache) > s.oidc_token_cache_size:
            self._cache.popitem(last=False)

    async def _key(self, kid: str) -> jwt.PyJWK | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self.settings.oidc_jwks_cache_s
        unknown = kid not in self._keys
        if stale or (unknown and now - self._fetched_at >= self.settings.oidc_jwks_min_refetch_s):
            try:
                await self._shared_refetch()
            except ProviderUnavailable as exc:
                if not self._keys:
                    raise
                log.warning("cannot refresh the provider's keys (using the ones held): %s", exc)
        if not self._keys:  # never read (the provider was down, the refetch waits its turn)
            raise ProviderUnavailable("no signing keys of the provider are held yet")
        return self._keys.get(kid)

    async def _shared_refetch(self) -> None:
        """One fetch for every caller that asks while it is on its way."""
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refetch())
        await asyncio.shield(self._refresh)

    async def _refetch(self) -> None:
        self._fetched_at = time.monotonic()  # also after a failure: the rate limit holds
        timeout = self.settings.oidc_timeout_s
        try:
            if self._jwks_uri is None:
                response = await self.client.get(
                    f"{self.issuer}/.well-known/openid-configuration", timeout=timeout
                )
                response.raise_for_status()
                discovery = response.json()
                if str(discovery.get("issuer", "")).rstrip("/") != self.issuer:
                    raise ProviderUnavailable(
                        f"the discovery document names issuer {discovery.get('issuer')!r}"
                    )
                self._issuer_claim = str(discovery["issuer"])
                self.token_endpoint = discovery.get("token_endpoint")
                self._jwks_uri = str(discovery["jwks_uri"])
            response = await self.client.get(self._jwks_uri, timeout=timeout)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError, jwt.PyJWKSetError) as exc:
            raise ProviderUnavailable(f"{type(exc).__name__}: {exc}") from None
        self._keys = {
            key.key_id: key
            for key in keys.keys
            if key.key_id and key.algorithm_name in self.algorithms and key.public_key_use in (None, "sig")
        }


_LATEST_TIME = 253402300799
"""9999-12-31T23:59:59Z: a NumericDate past it is no time a provider writes."""


def _numeric_date(value: object) -> bool:
    """A JSON number of seconds (RFC 7519 NumericDate) in 0..9999-12-31: not a string, a bool,
    NaN or a number no float holds."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return 0 <= value <= _LATEST_TIME  # False for NaN and the infinities too


def _checked_claims(claims: dict[str, Any]) -> float:
    """The token's `exp`, once its registered claims have the types and ranges RFC 7519 gives
    them (PyJWT takes `"exp": "123"` and any integer); an AuthError (401) if not."""
    for name in ("exp", "nbf", "iat"):
        if (name in claims or name == "exp") and not _numeric_date(claims.get(name)):
            raise AuthError(f"The token's {name} claim is not a valid time")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip():
        raise AuthError("The token's subject (sub) is not valid")
    return float(claims["exp"])


def _user_id(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        raw = int(raw)
    if isinstance(raw, int) and 1 <= raw <= MAX_USER_ID:
        return raw
    return None
