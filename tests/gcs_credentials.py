"""Throwaway Google credentials for the test session: a service-account key file with a freshly
generated RSA key (nothing committed, nothing that a real account accepts), and a local stand-in
for Google's OAuth token endpoint that the key file names as its `token_uri`.

The worker finds the key file through `GOOGLE_APPLICATION_CREDENTIALS`, as in production (ADC),
and exchanges a JWT signed with that key for an access token; the token endpoint checks the
JWT's signature against the public key before answering, so a token is only issued to the key.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from google.auth import jwt

SERVICE_ACCOUNT = "mediaworker-test@mw-test-project.iam.gserviceaccount.com"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
"""google-auth addresses its JWT to Google's token endpoint whatever the file's `token_uri`."""


@dataclass(frozen=True)
class ServiceAccount:
    key_file: Path
    email: str
    public_key: RSAPublicKey
    tokens_issued: list[str]


def _token_handler(public_pem: str, token_uri: str, issued: list[str]) -> type:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return None

        def do_POST(self) -> None:
            form = parse_qs(self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode())
            try:
                claims = jwt.decode(
                    form["assertion"][0],
                    certs=public_pem,
                    audience=[GOOGLE_TOKEN_AUDIENCE, token_uri],
                )
            except (KeyError, ValueError) as exc:
                self._answer(400, {"error": "invalid_grant", "error_description": str(exc)})
                return
            token = f"test-token-{len(issued)}"
            issued.append(str(claims["iss"]))
            self._answer(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600})

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def throwaway_service_account(folder: Path) -> Iterator[ServiceAccount]:
    """A key file in `folder` whose token endpoint runs for as long as the block."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    issued: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    token_uri = f"http://127.0.0.1:{server.server_address[1]}/token"
    server.RequestHandlerClass = _token_handler(public_pem, token_uri, issued)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    key_file = folder / "service-account.json"
    key_file.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "mw-test-project",
                "private_key_id": "throwaway",
                "private_key": pem,
                "client_email": SERVICE_ACCOUNT,
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    key_file.chmod(0o600)
    try:
        yield ServiceAccount(key_file, SERVICE_ACCOUNT, key.public_key(), issued)
    finally:
        server.shutdown()
        server.server_close()
