"""The api refuses to serve its open API (AUTH_MODE=none by default) on a public address."""

import pytest

from orders_api.app import create_app
from orders_api.settings import Settings


def test_the_api_refuses_to_start_open_on_a_public_address() -> None:
    with pytest.raises(RuntimeError, match="refusing to serve without access control"):
        create_app(Settings(bind_host="0.0.0.0"))
    create_app(Settings(bind_host="0.0.0.0", auth_mode="none"))  # said on purpose
    with pytest.raises(RuntimeError, match="needs OIDC_ISSUER and OIDC_AUDIENCE"):
        create_app(Settings(auth_mode="oidc"))
