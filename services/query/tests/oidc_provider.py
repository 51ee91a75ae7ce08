"""A test OpenID Connect provider for the query service's access-control tests, and what the
tests share: settings for AUTH_MODE=oidc against it, the bad tokens of the issue's list."""

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from orders_query.settings import Settings
from orders_stack import free_port

AUDIENCE = "orders-api"
USER_A, USER_B = 1001, 1002


class KeyProvider:
    """Signing keys and a real HTTP server publishing them as an OpenID Connect provider does."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.kids = {"rsa": "rsa-1", "ec": "ec-1"}
        self.jwks_hits = 0
        port = free_port()
        self.issuer = f"http://127.0.0.1:{port}"
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}/jwks.json",
                        "token_endpoint": f"{provider.issuer}/token",
                    }
                elif self.path == "/jwks.json":
                    provider.jwks_hits += 1
                    body = provider.jwks()
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> dict[str, Any]:
        keys = []
        for name, key in (("rsa", self.rsa), ("ec", self.ec)):
            jwk = json.loads(
                jwt.algorithms.get_default_algorithms()["RS256" if name == "rsa" else "ES256"].to_jwk(
                    key.public_key()
                )
            )
            jwk.update(kid=self.kids[name], use="sig", alg="RS256" if name == "rsa" else "ES256")
            keys.append(jwk)
        return {"keys": keys}

    def claims(self, user_id: int | None = USER_A, **extra: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": [AUDIENCE],
            "sub": f"user-{user_id}",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
        }
        if user_id is not None:
            claims["user_id"] = user_id
        claims.update(extra)
        return claims

    def sign(self, claims: dict[str, Any], key: str = "rsa", kid: str | None = None) -> str:
        private = self.rsa if key == "rsa" else self.ec
        algorithm = "RS256" if key == "rsa" else "ES256"
        return jwt.encode(claims, private, algorithm=algorithm, headers={"kid": kid or self.kids[key]})

    def token(self, user_id: int | None = USER_A, **extra: Any) -> str:
        return self.sign(self.claims(user_id, **extra))

    def public_pem(self) -> bytes:
        return self.rsa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def oidc_settings(test_env: dict[str, str], provider: KeyProvider, **extra: Any) -> Settings:
    return Settings(
        redis_url=test_env["REDIS_URL"],
        redis_key_prefix=test_env["REDIS_KEY_PREFIX"],
        auth_mode="oidc",
        oidc_issuer=provider.issuer,
        oidc_audience=AUDIENCE,
        sse_heartbeat_ms=200,
        **extra,
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def bad_tokens(p: KeyProvider) -> dict[str, tuple[str, str]]:
    """Each bad token of the issue's list, with the message it must get."""
    good = p.token()
    header, payload, signature = good.split(".")
    none_header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_body = _b64(json.dumps(p.claims()).encode())
    list_alg_header = _b64(json.dumps({"alg": ["RS256"], "typ": "JWT", "kid": p.kids["rsa"]}).encode())
    hs_signature = _b64(hmac.new(p.public_pem(), f"{hs_header}.{hs_body}".encode(), hashlib.sha256).digest())
    tampered = _b64(json.dumps({**p.claims(), "user_id": USER_B}).encode())
    now = int(time.time())
    return {
        "malformed": ("not-a-jwt", "The token is malformed"),
        "three garbage parts": ("abc.def.ghi", "The token is malformed"),
        "alg none": (f"{none_header}.{payload}.", "The token's algorithm is not accepted"),
        "alg not a string": (
            f"{list_alg_header}.{payload}.{signature}",
            "The token's algorithm is not accepted",
        ),
        "HS256 with the public key": (f"{hs_header}.{hs_body}.{hs_signature}", "algorithm is not accepted"),
        "unknown kid": (p.sign(p.claims(), kid="nobody-knows-me"), "The token's signing key is unknown"),
        "wrong issuer": (p.sign(p.claims(iss="http://evil.example")), "The token's issuer is not accepted"),
        "wrong audience": (p.sign(p.claims(aud=["another-api"])), "The token's audience is not accepted"),
        "expired": (
            p.sign(p.claims(exp=now - 3600, iat=now - 7200, nbf=now - 7200)),
            "The token has expired",
        ),
        "not yet valid": (p.sign(p.claims(nbf=now + 3600)), "The token is not valid yet"),
        "tampered payload": (f"{header}.{tampered}.{signature}", "The token's signature does not verify"),
        "oversized": (p.sign(p.claims(pad="x" * 9000)), "The token is too large"),
        "no exp": (p.sign({k: v for k, v in p.claims().items() if k != "exp"}), "lacks a required claim"),
        "exp past any time": (p.sign(p.claims(exp=10**400)), "The token's exp claim is not a valid time"),
        "exp a string": (p.sign(p.claims(exp=str(now + 600))), "The token's exp claim is not a valid time"),
        "nbf a string": (p.sign(p.claims(nbf=str(now))), "The token's nbf claim is not a valid time"),
        "iat a string": (p.sign(p.claims(iat=str(now))), "The token's iat claim is not a valid time"),
        "empty sub": (p.sign(p.claims(sub="")), "The token's subject (sub) is not valid"),
        "sub not a string": (p.sign(p.claims(sub=1001)), "The token is malformed"),
    }


BAD = [
    "malformed",
    "three garbage parts",
    "alg none",
    "alg not a string",
    "HS256 with the public key",
    "unknown kid",
    "wrong issuer",
    "wrong audience",
    "expired",
    "not yet valid",
    "tampered payload",
    "oversized",
    "no exp",
    "exp past any time",
    "exp a string",
    "nbf a string",
    "iat a string",
    "empty sub",
    "sub not a string",
]
