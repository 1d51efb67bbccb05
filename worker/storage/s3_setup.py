"""What a customer sets up for an S3 integration (`mediaworker policy` and `check`).

A resource-based bucket policy and the CORS rules. The policy grants exactly the requests the
worker makes: `s3:GetObject` on the sources (HeadObject is authorised as GetObject) and on the
renditions under the prefix (verification and `reprocess` read them back); for a read-write
integration also `s3:PutObject` (which covers multipart uploads), `s3:AbortMultipartUpload` and
`s3:DeleteObject` under the prefix only (a retried item first removes its stale `metadata.json`;
`check` deletes its probe). `s3:ListBucket`, conditioned on the source folders with `s3:prefix`,
only when MIRAX slides are expected. Every ARN is built here (`bucket_arn`, `objects_arn`).
"""

from __future__ import annotations

import json
import posixpath
import shlex
from typing import Any

from worker.config import Integration
from worker.policy import RENDITION_HEADERS, PolicyRequest, Setup, cors_methods, folder_of
from worker.storage.base import Capability

PLACEHOLDER_PRINCIPAL = "arn:aws:iam::111122223333:user/mediaworker"
"""Shown when no --principal is given; `policy` says to replace it."""

READ_ACTIONS = ["s3:GetObject"]
WRITE_ACTIONS = ["s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"]

BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
}
"""Codes that mean the key itself is wrong: no policy change can help."""


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def objects_arn(bucket: str, folder: str = "") -> str:
    """Every object under `folder` (the whole bucket when blank)."""
    return f"{bucket_arn(bucket)}/{folder_of(folder)}*"


def s3_bucket_policy(request: PolicyRequest) -> dict[str, Any]:
    integ = request.integration
    bucket = integ.bucket
    principal = {"AWS": request.principal or PLACEHOLDER_PRINCIPAL}
    rendition_arn = objects_arn(bucket, integ.prefix)
    source_arns = [objects_arn(bucket, f) for f in request.source_prefixes or ("",)]
    read_arns = sorted(set(source_arns) | {rendition_arn})
    statements: list[dict[str, Any]] = [
        _statement("MediaworkerReadSourcesAndRenditions", principal, READ_ACTIONS, read_arns)
    ]
    if not integ.readonly:
        statements.append(
            _statement("MediaworkerWriteRenditions", principal, WRITE_ACTIONS, [rendition_arn])
        )
    if request.mirax:
        statements.append(_list_statement(bucket, principal, request.source_prefixes))
    statements.append(
        _statement("MediaworkerCheckCors", principal, ["s3:GetBucketCORS"], [bucket_arn(bucket)])
    )
    return {"Version": "2012-10-17", "Statement": statements}


def _statement(
    sid: str, principal: dict[str, str], actions: list[str], resources: list[str]
) -> dict[str, Any]:
    return {
        "Sid": sid,
        "Effect": "Allow",
        "Principal": principal,
        "Action": actions,
        "Resource": resources,
    }


def _list_statement(
    bucket: str, principal: dict[str, str], folders: tuple[str, ...]
) -> dict[str, Any]:
    statement = _statement(
        "MediaworkerListMiraxFolders", principal, ["s3:ListBucket"], [bucket_arn(bucket)]
    )
    if folders:
        prefixes = [f"{folder_of(f)}*" for f in folders]
        statement["Condition"] = {"StringLike": {"s3:prefix": prefixes}}
    return statement


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
    setup = Setup(provider=integ.provider, bucket_policy=policy, cors=cors)
    setup.commands = [
        f"aws s3api put-bucket-policy --bucket {bucket} --policy file://policy.json{endpoint}",
        f"aws s3api put-bucket-cors --bucket {bucket} --cors-configuration file://cors.json"
        f"{endpoint}",
        f"mediaworker check {shlex.quote(integ.name)} --origin {shlex.quote(request.origin)}",
    ]
    setup.explanations = _explanations(request)
    return setup


def _explanations(request: PolicyRequest) -> list[str]:
    integ = request.integration
    sources = ", ".join(folder_of(f) or "/" for f in request.source_prefixes) or "the whole bucket"
    lines = [
        f"MediaworkerReadSourcesAndRenditions: s3:GetObject (also authorises HeadObject) on the"
        f" items in {sources} and on the renditions under {folder_of(integ.prefix)}.",
    ]
    if integ.readonly:
        lines.append("Read-only integration: no write action is granted; the worker never writes.")
    else:
        lines.append(
            f"MediaworkerWriteRenditions: s3:PutObject (single and multipart uploads),"
            f" s3:AbortMultipartUpload and s3:DeleteObject, only under {folder_of(integ.prefix)}:"
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


_ACTION_OF: dict[Capability, str] = {
    "read": "s3:GetObject",
    "sign": "s3:GetObject",
    "write": "s3:PutObject",
    "delete": "s3:DeleteObject",
    "list": "s3:ListBucket",
}
"""The policy action each of `check`'s capabilities needs."""


def denied_fix(integ: Integration, capability: Capability, key: str, code: str) -> str:
    """The statement to add for a refused capability, or the key to fix when it was the key."""
    if code in BAD_CREDENTIALS:
        return (
            f"the credentials were rejected ({code}): set AWS_ACCESS_KEY_ID and"
            " AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to a valid key for this bucket's account"
        )
    if capability == "list":
        resource = f"{bucket_arn(integ.bucket)} (condition s3:prefix on the item folders)"
    elif capability in ("write", "delete"):
        resource = objects_arn(integ.bucket, integ.prefix)
    else:
        resource = objects_arn(integ.bucket, posixpath.dirname(key))
    policy = f"`mediaworker policy {integ.name}` prints it"
    return f"allow {_ACTION_OF[capability]} on {resource} in the bucket policy ({policy})"


def cors_fix(integ: Integration, origin: str, missing: list[str]) -> str:
    rules = json.dumps(s3_cors(origin, integ.readonly), separators=(",", ":"))
    return (
        f"add a CORS rule allowing {', '.join(missing)} from {origin}: aws s3api put-bucket-cors"
        f" --bucket {integ.bucket} --cors-configuration '{rules}'"
    )
