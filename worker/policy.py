"""What a customer sets up on their bucket for an integration (`mediaworker policy`, SPEC 7).

Generated from the integration, so setting up a bucket is copy and paste and `check` passes. Each
provider's backend writes its own (`Storage.setup`): a bucket policy and CORS rules for S3
(`worker.storage.s3_setup`), role assignments and the CORS command for Azure
(`worker.storage.azure_setup`), IAM bindings and a CORS file for GCS (`worker.storage.gcs_setup`).
This module holds what they share and refuses requests that would print too wide a grant.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from worker.config import Integration
from worker.errors import ConfigError
from worker.storage.registry import backend_class

RENDITION_HEADERS = ["ETag", "Content-Length", "Content-Range", "Content-Encoding", "Accept-Ranges"]
"""Response headers a viewer reads, exposed to browsers by every provider's CORS rules."""


@dataclass(frozen=True)
class PolicyRequest:
    integration: Integration
    principal: str | None = None
    origin: str = "*"
    source_prefixes: tuple[str, ...] = ()
    """Partial access: the folders that hold the items; empty means the whole bucket."""
    mirax: bool = False


@dataclass
class Setup:
    """Everything `policy` prints: documents to paste, commands to run, and why each is there."""

    provider: str
    bucket_policy: dict[str, Any] | None = None
    cors: dict[str, Any] | list[dict[str, Any]] | None = None
    """GCS: the list that `gcloud storage buckets update --cors-file` reads."""
    commands: list[str] = field(default_factory=list)
    explanations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "bucket_policy": self.bucket_policy,
            "cors": self.cors,
            "commands": self.commands,
            "explanations": self.explanations,
        }


def folder_of(prefix: str) -> str:
    """A prefix as a folder: `data` -> `data/`, blank stays blank (the whole bucket)."""
    cleaned = prefix.strip().strip("/")
    return f"{cleaned}/" if cleaned else ""


def cors_methods(origin: str, readonly: bool) -> list[str]:
    """PUT only for a read-write integration and a named origin: never from any site (`*`)."""
    return ["GET", "HEAD"] if readonly or origin == "*" else ["GET", "HEAD", "PUT"]


def check_request(request: PolicyRequest) -> None:
    """Refuse what would print a policy open to anyone or reaching outside the bucket's folders."""
    principal = (request.principal or "").strip()
    if principal == "*" or principal.endswith(":*") or principal.endswith("/*"):
        raise ConfigError(
            f"--principal {principal!r} would grant every AWS account access to the bucket;"
            " give the ARN (S3) or identity (Azure) the workers run as"
        )
    for folder in request.source_prefixes:
        if ".." in folder.split("/") or "*" in folder or any(ord(c) < 32 for c in folder):
            raise ConfigError(
                f"--items {folder!r}: a folder of the bucket, without '..', '*' or control"
                " characters"
            )
    origin = urlsplit(request.origin)
    is_origin = origin.scheme in ("http", "https") and origin.hostname and origin.path in ("", "/")
    if request.origin != "*" and not is_origin:
        raise ConfigError(
            f"--origin {request.origin!r}: give '*' or an origin such as https://viewer.example"
        )


def build_setup(request: PolicyRequest) -> Setup:
    check_request(request)
    return backend_class(request.integration.provider).setup(request)


def render_text(setup: Setup) -> str:
    """Human output: the documents as valid JSON blocks, the commands, and why each is there."""
    parts: list[str] = []
    for line in setup.explanations:
        parts.append(f"# {line}")
    if setup.bucket_policy is not None:
        parts += ["", "# policy.json", json.dumps(setup.bucket_policy, indent=2)]
    if setup.cors is not None:
        parts += ["", "# cors.json", json.dumps(setup.cors, indent=2)]
    if setup.commands:
        parts += ["", "# then run:", *setup.commands]
    return "\n".join(parts) + "\n"
