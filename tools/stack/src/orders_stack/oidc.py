"""Ory Hydra as the local OpenID Connect provider, and tokens from it.

`Hydra` runs Hydra (built by `make hydra` into .cache/bin from infra/hydra) with
its in-memory store on loopback ports, and creates the project's clients through
its admin API:

- `orders-service`: a service client (client credentials, scope `orders:service`);
- `orders-web`: the client end users sign in through (authorization code).

`Provider` gets tokens from a running Hydra. An end user's token comes from the
real authorization-code flow, with this code playing Hydra's login and consent
app through the admin API: it accepts the login with the user's subject and the
consent with the user's id and roles as access-token claims (lifted to the
token's top level by `OAUTH2_ALLOWED_TOP_LEVEL_CLAIMS`). `make token`, the
end-to-end tests and the bench all use `Provider.user_token`.
"""

import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx

from .procs import Proc, wait_until

__all__ = ["AUDIENCE", "HYDRA_BIN", "SERVICE_SCOPE", "STAFF_ROLE", "Hydra", "Provider"]

HYDRA_BIN = Path(
    os.environ.get("HYDRA_BIN", Path(__file__).resolve().parents[4] / ".cache" / "bin" / "hydra")
)
AUDIENCE = "orders-api"
SERVICE_SCOPE = "orders:service"
STAFF_ROLE = "orders:staff"
_SERVICE_CLIENT = "orders-service"
_WEB_CLIENT = "orders-web"


@dataclass(frozen=True)
class Provider:
    """A running Hydra with the project's clients: what `make token` reads from `oidc.json`."""

    issuer: str
    admin: str
    service_client: str
    service_secret: str
    web_client: str
    web_secret: str
    redirect_uri: str
    audience: str = AUDIENCE

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> "Provider":
        return cls(**json.loads(path.read_text()))

    @property
    def service_env(self) -> dict[str, str]:
        """The variables that point a service at this provider."""
        return {
            "AUTH_MODE": "oidc",
            "OIDC_ISSUER": self.issuer,
            "OIDC_AUDIENCE": self.audience,
            "OIDC_SWAGGER_CLIENT_ID": self.service_client,
        }

    def allow_origins(self, origins: list[str]) -> None:
        """Let pages of `origins` (Swagger UI on the services) get the service client's tokens
        from the browser: Hydra answers CORS on its token endpoint per client."""
        patch = [{"op": "replace", "path": "/allowed_cors_origins", "value": origins}]
        answer = httpx.patch(f"{self.admin}/admin/clients/{self.service_client}", json=patch, timeout=10)
        answer.raise_for_status()

    def service_token(self) -> str:
        """A service client's access token (client credentials)."""
        with httpx.Client(timeout=10) as client:
            answer = client.post(
                f"{self.issuer}/oauth2/token",
                data={"grant_type": "client_credentials", "scope": SERVICE_SCOPE, "audience": self.audience},
                auth=(self.service_client, self.service_secret),
            )
            answer.raise_for_status()
            return str(answer.json()["access_token"])

    def user_token(self, user_id: int | None, role: str = "customer") -> str:
        """An end user's access token through the authorization-code flow (`role`: customer or
        staff; `user_id` None gives a token without the user claim)."""
        claims: dict[str, object] = {"roles": [STAFF_ROLE] if role == "staff" else []}
        if user_id is not None:
            claims["user_id"] = user_id
        subject = f"user-{user_id}" if user_id is not None else f"nobody-{secrets.token_hex(4)}"
        with httpx.Client(timeout=10, follow_redirects=False) as browser, httpx.Client(timeout=10) as admin:
            state = secrets.token_urlsafe(16)
            answer = browser.get(
                f"{self.issuer}/oauth2/auth",
                params={
                    "client_id": self.web_client,
                    "response_type": "code",
                    "scope": "openid",
                    "redirect_uri": self.redirect_uri,
                    "state": state,
                    "audience": self.audience,
                },
            )
            login = _param(answer, "login_challenge")
            accepted = admin.put(
                f"{self.admin}/admin/oauth2/auth/requests/login/accept",
                params={"login_challenge": login},
                json={"subject": subject},
            )
            accepted.raise_for_status()
            answer = browser.get(accepted.json()["redirect_to"])
            consent = _param(answer, "consent_challenge")
            asked = admin.get(
                f"{self.admin}/admin/oauth2/auth/requests/consent", params={"consent_challenge": consent}
            )
            asked.raise_for_status()
            request = asked.json()
            accepted = admin.put(
                f"{self.admin}/admin/oauth2/auth/requests/consent/accept",
                params={"consent_challenge": consent},
                json={
                    "grant_scope": request.get("requested_scope") or [],
                    "grant_access_token_audience": request.get("requested_access_token_audience") or [],
                    "session": {"access_token": claims},
                },
            )
            accepted.raise_for_status()
            answer = browser.get(accepted.json()["redirect_to"])
            code = _param(answer, "code")
            if _param(answer, "state") != state:
                raise RuntimeError("the provider returned another state")
            token = browser.post(
                f"{self.issuer}/oauth2/token",
                data={"grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri},
                auth=(self.web_client, self.web_secret),
            )
            token.raise_for_status()
            return str(token.json()["access_token"])


def _param(answer: httpx.Response, name: str) -> str:
    """A query parameter of the redirect `answer` points to."""
    if answer.status_code not in (302, 303):
        raise RuntimeError(
            f"expected a redirect carrying {name}, got {answer.status_code}: {answer.text[:300]}"
        )
    values = parse_qs(urlsplit(answer.headers["location"]).query).get(name)
    if not values:
        raise RuntimeError(f"the redirect carries no {name}: {answer.headers['location'][:300]}")
    return values[0]


@dataclass
class Hydra:
    """Hydra on loopback (in-memory store), with the project's clients once started."""

    data_dir: Path
    public_port: int = 4444
    admin_port: int = 4445
    cors_origins: list[str] = field(default_factory=list)
    proc: Proc | None = None
    provider: Provider | None = None

    def start(self) -> Provider:
        from .stack import _port_free, free_port  # stack imports this module

        if not HYDRA_BIN.exists():
            raise RuntimeError(
                f"{HYDRA_BIN} is missing: run `make hydra` (builds Ory Hydra from infra/hydra)"
            )
        self.public_port = self.public_port or free_port()
        self.admin_port = self.admin_port or free_port()
        for port in (self.public_port, self.admin_port):
            _port_free(port)
        issuer = f"http://127.0.0.1:{self.public_port}"
        admin = f"http://127.0.0.1:{self.admin_port}"
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.data_dir),
            "DSN": "memory",
            "SECRETS_SYSTEM": secrets.token_urlsafe(32),  # the in-memory store dies with the process
            "URLS_SELF_ISSUER": issuer,
            # Never visited: the caller plays the login and consent app through the admin API.
            "URLS_LOGIN": f"{issuer}/login",
            "URLS_CONSENT": f"{issuer}/consent",
            "STRATEGIES_ACCESS_TOKEN": "jwt",
            "SERVE_PUBLIC_HOST": "127.0.0.1",
            "SERVE_PUBLIC_PORT": str(self.public_port),
            "SERVE_ADMIN_HOST": "127.0.0.1",
            "SERVE_ADMIN_PORT": str(self.admin_port),
            "OAUTH2_ALLOWED_TOP_LEVEL_CLAIMS": "user_id,roles",
            "TTL_ACCESS_TOKEN": "1h",
            "LOG_LEVEL": "warn",
            # Swagger UI's Authorize posts to the token endpoint from the services' origins.
            "SERVE_PUBLIC_CORS_ENABLED": "true",
            "SERVE_PUBLIC_CORS_ALLOWED_ORIGINS": ",".join(self.cors_origins or ["*"]),
            # Swagger UI's token request sends X-Requested-With, which is not among Hydra's defaults.
            "SERVE_PUBLIC_CORS_ALLOWED_HEADERS": "Accept,Authorization,Content-Type,X-Requested-With",
        }
        self.proc = Proc(
            "hydra",
            [str(HYDRA_BIN), "serve", "all", "--dev", "--sqa-opt-out"],
            self.data_dir / "logs" / "hydra.log",
            env=env,
        ).start()
        try:
            discovery = f"{issuer}/.well-known/openid-configuration"
            wait_until("Hydra", lambda: httpx.get(discovery, timeout=20).status_code == 200, 60, [self.proc])
            wait_until("Hydra admin", lambda: httpx.get(f"{admin}/health/ready", timeout=2).is_success, 60)
            self.provider = self._create_clients(issuer, admin)
            if self.cors_origins:
                self.provider.allow_origins(self.cors_origins)
            # Hydra makes its access-token signing key when it first signs one: make it now, so
            # the services find it in the JWKS they read at start (an unknown kid refetches
            # at most every OIDC_JWKS_MIN_REFETCH_S).
            self.provider.service_token()
        except BaseException:
            self.stop()
            raise
        return self.provider

    def _create_clients(self, issuer: str, admin: str) -> Provider:
        service_secret, web_secret = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        redirect_uri = (
            f"http://127.0.0.1:{self.public_port}/callback"  # never served: the code is read off it
        )
        clients = [
            {
                "client_id": _SERVICE_CLIENT,
                "client_secret": service_secret,
                "grant_types": ["client_credentials"],
                "scope": SERVICE_SCOPE,
                "audience": [AUDIENCE],
                "token_endpoint_auth_method": "client_secret_basic",
            },
            {
                "client_id": _WEB_CLIENT,
                "client_secret": web_secret,
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "scope": "openid",
                "audience": [AUDIENCE],
                "redirect_uris": [redirect_uri],
                "token_endpoint_auth_method": "client_secret_basic",
            },
        ]
        with httpx.Client(timeout=10) as client:
            for body in clients:
                client.post(f"{admin}/admin/clients", json=body).raise_for_status()
        return Provider(issuer, admin, _SERVICE_CLIENT, service_secret, _WEB_CLIENT, web_secret, redirect_uri)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def __enter__(self) -> Provider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
