"""What a customer sets up for a GCS integration (`mediaworker policy` and `check`).

Cloud Storage has no bucket policy document: access is IAM role bindings on the bucket, printed
as `gcloud storage buckets add-iam-policy-binding` commands, each explained:

- Storage Object Viewer (`storage.objects.get`, `storage.objects.list`) to read the items and the
  renditions (verification and `reprocess` read them back);
- for a read-write integration, Storage Object User under the prefix only, through an IAM
  condition on the object name: it creates renditions (`storage.objects.create`) and also
  replaces and deletes them (`storage.objects.delete`), which a retried item and `check`'s probe
  need; Storage Object Creator alone cannot overwrite;
- with partial access (`--items`), the Viewer binding carries a condition on the item folders
  and the prefix. A listing is authorised on the bucket, where an object-name condition never
  matches, so MIRAX and DICOM folders then need `storage.objects.list` in a custom role of its
  own, bound without condition (it reveals names, not contents);
- without a key file the worker signs URLs through IAM `signBlob`: the Service Account Token
  Creator role of its service account on itself.

IAM conditions need uniform bucket-level access on the bucket. CORS is a JSON file for
`gcloud storage buckets update --cors-file`.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from worker.policy import RENDITION_HEADERS, PolicyRequest, Setup, cors_methods, folder_of
from worker.storage.gcs import CREATE, DELETE, GET, LIST, SIGN_BLOB

VIEWER = "roles/storage.objectViewer"
USER = "roles/storage.objectUser"
TOKEN_CREATOR = "roles/iam.serviceAccountTokenCreator"
LISTER_ROLE_ID = "mediaworkerLister"
PLACEHOLDER_ACCOUNT = "mediaworker@PROJECT_ID.iam.gserviceaccount.com"

ROLE_FOR = {
    GET: "Storage Object Viewer (roles/storage.objectViewer)",
    LIST: "Storage Object Viewer (roles/storage.objectViewer), or a custom role with it",
    CREATE: "Storage Object User (roles/storage.objectUser) under the prefix",
    DELETE: "Storage Object User (roles/storage.objectUser) under the prefix",
    SIGN_BLOB: "Service Account Token Creator (roles/iam.serviceAccountTokenCreator) on itself",
}
"""The role that grants each permission the worker's requests need."""


def member(principal: str | None) -> str:
    """An IAM member: a bare e-mail is a service account; `user:...`, `group:...` stay."""
    value = principal or PLACEHOLDER_ACCOUNT
    return value if ":" in value else f"serviceAccount:{value}"


def name_condition(bucket: str, folders: list[str]) -> str:
    """A CEL expression true for objects under any of the folders."""
    return " || ".join(
        f'resource.name.startsWith("projects/_/buckets/{bucket}/objects/{folder_of(f)}")'
        for f in folders
    )


def _binding(bucket: str, who: str, role: str, condition: str = "", title: str = "") -> str:
    command = (
        f"gcloud storage buckets add-iam-policy-binding gs://{bucket}"
        f" --member={shlex.quote(who)} --role={role}"
    )
    if condition:
        command += " --condition=" + shlex.quote(f"expression={condition},title={title}")
    return command


def cors_file(origin: str, readonly: bool) -> list[dict[str, Any]]:
    methods = cors_methods(origin, readonly)  # PUT never from any site

    headers = ["Content-Type", "Range", *RENDITION_HEADERS]
    return [
        {"origin": [origin], "method": methods, "responseHeader": headers, "maxAgeSeconds": 3600}
    ]


def gcs_setup(request: PolicyRequest) -> Setup:
    integ = request.integration
    bucket, who, prefix = integ.bucket, member(request.principal), folder_of(integ.prefix)
    partial = bool(request.source_prefixes)
    read_folders = [*request.source_prefixes, integ.prefix]
    setup = Setup(provider="gcs", cors=cors_file(request.origin, integ.readonly))
    setup.commands.append(
        _binding(bucket, who, VIEWER, name_condition(bucket, read_folders), "mediaworker-read")
        if partial
        else _binding(bucket, who, VIEWER)
    )
    if not integ.readonly:
        write = name_condition(bucket, [integ.prefix])
        setup.commands.append(_binding(bucket, who, USER, write, "mediaworker-write"))
    if partial and request.mirax:
        setup.commands += [
            f"gcloud iam roles create {LISTER_ROLE_ID} --project=PROJECT_ID"
            f" --title='mediaworker lister' --permissions={LIST}",
            _binding(bucket, who, f"projects/PROJECT_ID/roles/{LISTER_ROLE_ID}"),
        ]
    account = who.removeprefix("serviceAccount:")
    if who.startswith("serviceAccount:"):
        setup.commands.append(
            f"gcloud iam service-accounts add-iam-policy-binding {shlex.quote(account)}"
            f" --member={shlex.quote(who)} --role={TOKEN_CREATOR}"
        )
    setup.commands += [
        f"gcloud storage buckets update gs://{bucket} --cors-file=cors.json",
        f"mediaworker check {shlex.quote(integ.name)} --origin {shlex.quote(request.origin)}",
    ]
    setup.explanations = _explanations(request, prefix, partial)
    return setup


def _explanations(request: PolicyRequest, prefix: str, partial: bool) -> list[str]:
    integ = request.integration
    sources = ", ".join(folder_of(f) for f in request.source_prefixes) or "the whole bucket"
    lines = [
        f"{VIEWER}: {GET} and {LIST}, to read the items in {sources} and the renditions under"
        f" {prefix}" + (" (the condition limits it to those folders)." if partial else "."),
    ]
    if integ.readonly:
        lines.append("Read-only integration: no write role is granted; the worker never writes.")
    else:
        lines.append(
            f"{USER} under {prefix} only (IAM condition): {CREATE} to write renditions and"
            f" metadata.json, {DELETE} to replace them when an item is retried and to remove"
            " `check`'s probe; roles/storage.objectCreator alone cannot overwrite."
        )
    if partial and request.mirax:
        lines.append(
            f"{LISTER_ROLE_ID}: {LIST} alone, on the bucket without condition (a listing is"
            " authorised on the bucket, where an object-name condition never matches), to list"
            " the folder of each MIRAX slide (NAME.mrxs + NAME/); it reveals names, not contents."
        )
    elif request.mirax:
        lines.append(f"{LIST}, to list MIRAX slide folders, is part of {VIEWER}.")
    lines += [
        f"{TOKEN_CREATOR} of the service account on itself: only when the worker has no key file"
        " (workload identity, an attached service account), to sign URLs through IAM signBlob.",
        "IAM conditions need uniform bucket-level access on the bucket"
        f" (gcloud storage buckets update gs://{integ.bucket} --uniform-bucket-level-access).",
        "`check` reads the CORS configuration with storage.buckets.get; processing never does.",
    ]
    if not request.principal:
        lines.append(f"Replace {PLACEHOLDER_ACCOUNT} with the workers' service account.")
    *first, last = cors_methods(request.origin, integ.readonly)
    methods = f"{', '.join(first)} and {last}"
    lines.append(
        f"CORS (cors.json): browsers at {request.origin} may {methods} the renditions, with"
        " Range requests (HLS, tiles) and the headers a viewer reads exposed."
    )
    return lines


def cors_fix(bucket: str, origin: str, readonly: bool) -> str:
    rules = json.dumps(cors_file(origin, readonly), separators=(",", ":"))
    return (
        f"write cors.json = {rules} then run: gcloud storage buckets update gs://{bucket}"
        " --cors-file=cors.json"
    )


def denied_fix(message: str) -> str:
    """The role to grant for a refusal; the backend's message names the permission."""
    permission = next((p for p in ROLE_FOR if p in message), GET)
    return (
        f"grant the worker's identity {permission}: {ROLE_FOR[permission]}"
        " (`mediaworker policy` prints the gcloud commands)"
    )
