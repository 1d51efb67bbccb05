"""What a customer sets up on their bucket for an integration (`mediaworker policy`, SPEC 7).

Generated from the integration, so setting up a bucket is copy and paste and `check` passes:

- S3 and Wasabi: a resource-based bucket policy and the CORS rules. The policy grants exactly the
  requests the worker makes: `s3:GetObject` on the sources (HeadObject is authorised as GetObject)
  and on the renditions under the prefix (verification and `reprocess` read them back); for a
  read-write integration also `s3:PutObject` (which covers multipart uploads),
  `s3:AbortMultipartUpload` and `s3:DeleteObject` under the prefix only (a retried item first
  removes its stale `metadata.json`; `check` deletes its probe). `s3:ListBucket`, conditioned on
  the source folders with `s3:prefix`, only when MIRAX slides are expected.
- Azure: role assignments (Storage Blob Data Reader, or Contributor for read-write, on the
  container; Storage Blob Delegator on the account for user-delegation SAS) and the CORS command.
- GCS: IAM role bindings as `gcloud` commands and the CORS file (`worker.storage.gcs_setup`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from worker.config import Integration, Provider
from worker.errors import ConfigError

PLACEHOLDER_PRINCIPAL = "arn:aws:iam::111122223333:user/mediaworker"
"""Shown when no --principal is given; `policy` says to replace it."""
RENDITION_HEADERS = ["ETag", "Content-Length", "Content-Range", "Content-Encoding", "Accept-Ranges"]

READ_ACTIONS = ["s3:GetObject"]
WRITE_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"]


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


def _folder(prefix: str) -> str:
    cleaned = prefix.strip().strip("/")
    return f"{cleaned}/" if cleaned else ""


def _object_arns(bucket: str, folders: tuple[str, ...]) -> list[str]:
    if not folders:
        return [f"arn:aws:s3:::{bucket}/*"]
    return [f"arn:aws:s3:::{bucket}/{_folder(f)}*" for f in folders]


def s3_bucket_policy(request: PolicyRequest) -> dict[str, Any]:
    integ = request.integration
    bucket = integ.bucket
    principal = {"AWS": request.principal or PLACEHOLDER_PRINCIPAL}
    rendition_arn = f"arn:aws:s3:::{bucket}/{_folder(integ.prefix)}*"
    source_arns = _object_arns(bucket, request.source_prefixes)
    read_arns = sorted(set(source_arns) | {rendition_arn})
    statements: list[dict[str, Any]] = [
        {
            "Sid": "MediaworkerReadSourcesAndRenditions",
            "Effect": "Allow",
            "Principal": principal,
            "Action": READ_ACTIONS,
            "Resource": read_arns,
        }
    ]
    if not integ.readonly:
        statements.append(
            {
                "Sid": "MediaworkerWriteRenditions",
                "Effect": "Allow",
                "Principal": principal,
                "Action": WRITE_ACTIONS,
                "Resource": [rendition_arn],
            }
        )
    if request.mirax:
        statements.append(_list_statement(bucket, principal, request.source_prefixes))
    statements.append(
        {
            "Sid": "MediaworkerCheckCors",
            "Effect": "Allow",
            "Principal": principal,
            "Action": ["s3:GetBucketCORS"],
            "Resource": [f"arn:aws:s3:::{bucket}"],
        }
    )
    return {"Version": "2012-10-17", "Statement": statements}


def _list_statement(
    bucket: str, principal: dict[str, str], folders: tuple[str, ...]
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": "MediaworkerListMiraxFolders",
        "Effect": "Allow",
        "Principal": principal,
        "Action": ["s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}"],
    }
    if folders:
        prefixes = [f"{_folder(f)}*" for f in folders]
        statement["Condition"] = {"StringLike": {"s3:prefix": prefixes}}
    return statement


def cors_methods(origin: str, readonly: bool) -> list[str]:
    """PUT only for a read-write integration and a named origin: never from any site (`*`)."""
    return ["GET", "HEAD"] if readonly or origin == "*" else ["GET", "HEAD", "PUT"]


def s3_cors(origin: str, readonly: bool) -> dict[str, Any]:
    methods = cors_methods(origin, readonly)
    return {
        "CORSRules": [
            {
                "AllowedOrigins": [origin],
                "AllowedMethods": methods,
                "AllowedHeaders": ["*"],
                "ExposeHeaders": RENDITION_HEADERS,
                "MaxAgeSeconds": 3600,
            }
        ]
    }


def s3_setup(request: PolicyRequest) -> Setup:
    integ = request.integration
    policy = s3_bucket_policy(request)
    cors = s3_cors(request.origin, integ.readonly)
    endpoint = f" --endpoint-url {shlex.quote(integ.endpoint_url)}" if integ.endpoint_url else ""
    bucket = shlex.quote(integ.bucket)
    setup = Setup(provider=integ.provider.value, bucket_policy=policy, cors=cors)
    setup.commands = [
        f"aws s3api put-bucket-policy --bucket {bucket} --policy file://policy.json{endpoint}",
        f"aws s3api put-bucket-cors --bucket {bucket} --cors-configuration file://cors.json"
        f"{endpoint}",
        f"mediaworker check {shlex.quote(integ.name)} --origin {shlex.quote(request.origin)}",
    ]
    setup.explanations = _s3_explanations(request)
    return setup


def _s3_explanations(request: PolicyRequest) -> list[str]:
    integ = request.integration
    sources = ", ".join(_folder(f) or "/" for f in request.source_prefixes) or "the whole bucket"
    lines = [
        f"MediaworkerReadSourcesAndRenditions: s3:GetObject (also authorises HeadObject) on the"
        f" items in {sources} and on the renditions under {_folder(integ.prefix)}.",
    ]
    if integ.readonly:
        lines.append("Read-only integration: no write action is granted; the worker never writes.")
    else:
        lines.append(
            f"MediaworkerWriteRenditions: s3:PutObject (single and multipart uploads),"
            f" s3:AbortMultipartUpload and s3:DeleteObject, only under {_folder(integ.prefix)}:"
            " renditions and metadata.json are written there, a retried item first removes its"
            " stale metadata.json, and `check` deletes its probe object."
        )
    if request.mirax:
        lines.append(
            "MediaworkerListMiraxFolders: s3:ListBucket, the one bucket-level call, to list the"
            " data folder of each MIRAX slide (NAME.mrxs + NAME/); s3:prefix limits it to the"
            " item folders."
        )
    lines.append(
        "MediaworkerCheckCors: s3:GetBucketCORS, read only by `mediaworker check` to report the"
        " CORS rules; processing never calls it, so it may be left out."
    )
    if not request.principal:
        lines.append(f"Replace {PLACEHOLDER_PRINCIPAL} with the ARN the workers run as.")
    *first, last = cors_methods(request.origin, integ.readonly)
    methods = f"{', '.join(first)} and {last}"
    if not integ.readonly and request.origin == "*":
        lines.append("PUT is allowed only from a named origin: give --origin https://viewer...")
    lines.append(
        f"CORS: browsers at {request.origin} may {methods} the renditions, with Range requests"
        " (HLS, tiles) and the headers a viewer reads exposed."
    )
    return lines


AZURE_READER = "Storage Blob Data Reader"
AZURE_CONTRIBUTOR = "Storage Blob Data Contributor"
AZURE_DELEGATOR = "Storage Blob Delegator"


def azure_setup(request: PolicyRequest) -> Setup:
    integ = request.integration
    account = integ.bucket
    assignee = shlex.quote(request.principal or "<worker-principal-id>")
    account_scope = (
        "/subscriptions/<subscription-id>/resourceGroups/<resource-group>"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
    )
    container_scope = f"{account_scope}/blobServices/default/containers/{integ.azure_container}"
    role = AZURE_READER if integ.readonly else AZURE_CONTRIBUTOR
    methods = " ".join([*cors_methods(request.origin, integ.readonly), "OPTIONS"])
    setup = Setup(provider="azure")
    setup.commands = [
        f"az role assignment create --assignee {assignee} --role {shlex.quote(role)}"
        f" --scope {shlex.quote(container_scope)}",
        f"az role assignment create --assignee {assignee} --role {shlex.quote(AZURE_DELEGATOR)}"
        f" --scope {shlex.quote(account_scope)}",
        f"az storage cors add --services b --account-name {shlex.quote(account)}"
        f" --origins {shlex.quote(request.origin)} --methods {methods}"
        f" --allowed-headers '*' --exposed-headers '*' --max-age 3600",
        f"mediaworker check {shlex.quote(integ.name)} --origin {shlex.quote(request.origin)}",
    ]
    setup.cors = {
        "allowed_origins": [request.origin],
        "allowed_methods": methods.split(),
        "allowed_headers": ["*"],
        "exposed_headers": ["*"],
        "max_age_in_seconds": 3600,
    }
    setup.explanations = [
        f"{role} on container {integ.azure_container}: "
        + (
            "read the items and the pre-extracted renditions (read-only integration)."
            if integ.readonly
            else "read the items, write and delete renditions under the prefix."
        ),
        f"{AZURE_DELEGATOR} on the account: only when the worker signs with a user-delegation"
        " SAS (no account key configured).",
        f"CORS: browsers at {request.origin} may {methods.replace(' ', ', ')} blobs.",
        "Azure role assignments cover whole containers; to limit the worker to folders, give it"
        " its own container or an account-key SAS scoped to them.",
    ]
    if not request.principal:
        setup.explanations.append("Replace <worker-principal-id> with the workers' identity.")
    return setup


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
    provider = request.integration.provider
    if provider.is_s3:
        return s3_setup(request)
    if provider == Provider.AZURE:
        return azure_setup(request)
    if provider == Provider.GCS:
        from worker.storage.gcs_setup import gcs_setup

        return gcs_setup(request)
    return Setup(
        provider="local",
        explanations=["A local integration is a folder: the worker needs read (and, for"
                      " read-write, write) permission on it; there is no policy to set."],
    )  # fmt: skip


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
