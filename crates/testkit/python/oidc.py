"""A minimal OpenID Connect provider for tests: the discovery document, a JWKS with one RSA key
made at start-up, and an OAuth2 client-credentials token endpoint that issues RS256 JWTs.

It stands in for the identity provider (Keycloak, Entra ID, Okta ...) a production REST catalog
trusts, so that a real catalog server (rustberg) validates the tokens calve fetches: signature,
issuer, audience, expiry. One client is accepted. Each issued or refused token request is
printed as a JSON line on stdout, so a test can count them.

Usage: oidc.py PORT CLIENT_ID CLIENT_SECRET AUDIENCE TTL_SECONDS
"""
import base64
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

PORT, CLIENT_ID, CLIENT_SECRET, AUDIENCE, TTL = (
    int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
ISSUER = f"http://127.0.0.1:{PORT}"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = "calve-test-key"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(n: int) -> str:
    return b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def jwt(claims: dict) -> str:
    header = {"alg": "RS256", "typ": "JWT", "kid": KID}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = KEY.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64url(signature)}"


def event(kind: str, **fields):
    print(json.dumps({"event": kind, "at": time.time(), **fields}), flush=True)


class Handler(BaseHTTPRequestHandler):
    def reply(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/.well-known/openid-configuration":
            self.reply(200, {
                "issuer": ISSUER,
                "jwks_uri": f"{ISSUER}/jwks.json",
                "token_endpoint": f"{ISSUER}/token",
                "grant_types_supported": ["client_credentials"],
                "id_token_signing_alg_values_supported": ["RS256"],
            })
        elif self.path == "/jwks.json":
            public = KEY.public_key().public_numbers()
            self.reply(200, {"keys": [{
                "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
                "n": uint(public.n), "e": uint(public.e),
            }]})
        else:
            self.reply(404, {"error": "not_found"})

    def do_POST(self):
        if self.path != "/token":
            self.reply(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        client_id, secret = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            client_id, _, secret = base64.b64decode(auth[6:]).decode().partition(":")
        if form.get("grant_type") != "client_credentials":
            event("refused", reason="grant_type")
            self.reply(400, {"error": "unsupported_grant_type"})
            return
        if client_id != CLIENT_ID or secret != CLIENT_SECRET:
            event("refused", reason="client")
            self.reply(401, {"error": "invalid_client", "error_description": "unknown client or wrong secret"})
            return
        now = int(time.time())
        token = jwt({
            "iss": ISSUER, "aud": AUDIENCE, "sub": client_id, "iat": now, "nbf": now,
            "exp": now + TTL, "jti": str(uuid.uuid4()), "tenant_id": "default", "roles": ["admin"],
            "scope": form.get("scope", ""),
        })
        event("issued", scope=form.get("scope", ""))
        self.reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": TTL})

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
