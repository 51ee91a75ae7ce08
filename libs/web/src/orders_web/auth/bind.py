"""Refusing to start open: the open API (AUTH_MODE=none) only on loopback unless asked for."""

import ipaddress

from orders_contract.settings import AuthSettings

__all__ = ["check_bind"]


def check_bind(settings: AuthSettings, bind_host: str) -> None:
    """Refuse to serve the open API on a non-loopback address unless AUTH_MODE=none was
    set on purpose; refuse oidc without an issuer or audience."""
    if settings.auth_mode == "oidc":
        if not settings.oidc_issuer or not settings.oidc_audience:
            raise RuntimeError("AUTH_MODE=oidc needs OIDC_ISSUER and OIDC_AUDIENCE")
        return
    if "auth_mode" not in settings.model_fields_set and not _loopback(bind_host):
        raise RuntimeError(
            f"refusing to serve without access control on {bind_host}: set AUTH_MODE=oidc "
            "(with OIDC_ISSUER and OIDC_AUDIENCE), or AUTH_MODE=none explicitly"
        )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
